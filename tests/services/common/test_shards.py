"""Training shards: written from a real dataset of tiny clips, streamed back through real
DataLoaders (2 ranks x 2 workers), resumed part-way, verified, and on MinIO/S3 (moto)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.utils.data
from click.testing import CliRunner

from services.cli import main
from services.common.config import StoreSettings
from services.common.dataset import Dataset
from services.common.errors import ConfigError, IntegrityError
from services.common.records import ClipRecord
from services.common.shards import INDEX_NAME, ShardIndex, ShardStream, write_shards
from services.common.store import ClipStore
from services.common.video import write_frames

# A clip of this shape is ~2 KB: max_bytes=8 KB puts three or four in a shard.
_SMALL = 8 << 10


def _add_clips(store: ClipStore, tmp_path: Path, count: int, first: int = 0) -> None:
    """Commit ``count`` distinct tiny clips (4 frames, 32x32) to dataset ``d``."""
    records = []
    for n in range(first, first + count):
        path = tmp_path / f"clip{n}.mp4"
        frames = np.full((4, 32, 32, 3), n * 7 % 256, dtype=np.uint8)
        frames[:, : n % 32] = 255  # no two clips alike
        write_frames(path, frames)
        source_id = hashlib.sha256(f"source-{n}".encode()).hexdigest()
        ref = store.put_file(ClipStore.clip_key(source_id, 0, 4), path)
        records.append(ClipRecord(ref, source_id, f"video-{n}", f"tag{n % 3}", 0, 4, 25.0, 4))
    Dataset(store, "d").add(records)


def _keep(batch: list[Any]) -> list[Any]:
    return batch


def _key(sample: tuple[dict[str, Any], bytes]) -> str:
    return sample[0]["clip"]["key"]


def _rank_batches(
    index: ShardIndex,
    store: ClipStore | None,
    rank: int,
    epoch: int = 0,
    start: int = 0,
    **options: Any,
) -> list[list[str]]:
    """The clip keys of each loader batch one rank gets from a real 2-worker DataLoader."""
    stream = ShardStream(
        index, batch_size=2, store=store, rank=rank, world=2, num_workers=2, seed=7, **options
    )
    stream.set_epoch(epoch, start)
    loader = torch.utils.data.DataLoader(stream, batch_size=2, num_workers=2, collate_fn=_keep)
    return [[_key(sample) for sample in batch] for batch in loader]


@pytest.fixture()
def dataset_store(local_store: ClipStore, tmp_path: Path) -> ClipStore:
    _add_clips(local_store, tmp_path, 24)
    return local_store


def test_every_sample_once_per_epoch_across_ranks_and_workers(dataset_store: ClipStore):
    index = write_shards(dataset_store, "d", max_bytes=_SMALL)
    assert len(index.shards) >= 4 and index.samples == 24  # whole shards per slot
    clips = {record.clip.key for record in Dataset(dataset_store, "d").snapshot().clips}
    ranks = [_rank_batches(index, dataset_store, rank) for rank in (0, 1)]
    keys = [key for batches in ranks for batch in batches for key in batch]
    assert sorted(keys) == sorted(clips)  # 24 = 2 ranks x 2 workers x 3 batches x 2: none dropped
    assert [len(batches) for batches in ranks] == [6, 6]
    stream = ShardStream(index, batch_size=2, store=dataset_store, world=2, num_workers=2)
    assert len(stream) == 12
    # Each member is the clip and its record with the label of its hashtag.
    labels = Dataset(dataset_store, "d").snapshot().labels
    for record, mp4 in stream:
        assert hashlib.sha256(mp4).hexdigest() == record["clip"]["sha256"]
        assert record["label"] == labels[record["hashtag"]]


def test_order_is_fixed_by_seed_and_epoch_and_the_same_in_process(dataset_store: ClipStore):
    index = write_shards(dataset_store, "d", max_bytes=_SMALL)
    first = _rank_batches(index, dataset_store, rank=0, epoch=3)
    assert _rank_batches(index, dataset_store, rank=0, epoch=3) == first
    other = _rank_batches(index, dataset_store, rank=0, epoch=4)
    assert other != first
    # Reading in the loading process interleaves the workers' batches as the loader does.
    stream = ShardStream(index, batch_size=2, store=dataset_store, world=2, num_workers=2, seed=7)
    stream.set_epoch(3)
    assert [_key(sample) for sample in stream] == [key for batch in first for key in batch]


def test_fewer_shards_than_slots_split_members_and_drop_the_same_excess(
    local_store: ClipStore, tmp_path: Path
):
    _add_clips(local_store, tmp_path, 27)
    index = write_shards(local_store, "d")  # one shard for 4 slots
    assert len(index.shards) == 1
    ranks = [_rank_batches(index, local_store, rank, epoch=1) for rank in (0, 1)]
    keys = [key for batches in ranks for batch in batches for key in batch]
    assert len(keys) == len(set(keys)) == 24  # 27 // (4 slots x 2) x 8: 3 dropped
    assert [len(batches) for batches in ranks] == [6, 6]
    assert all(len(batch) == 2 for batches in ranks for batch in batches)


@pytest.mark.parametrize("start", [1, 3, 4])
def test_resume_part_way_gives_the_remaining_batches(dataset_store: ClipStore, start: int):
    index = write_shards(dataset_store, "d", max_bytes=_SMALL)
    whole = _rank_batches(index, dataset_store, rank=1, epoch=2, shuffle_buffer=5)
    resumed = _rank_batches(index, dataset_store, rank=1, epoch=2, start=start, shuffle_buffer=5)
    assert resumed == whole[start:]


def test_persistent_workers_follow_set_epoch(dataset_store: ClipStore):
    index = write_shards(dataset_store, "d", max_bytes=_SMALL)
    stream = ShardStream(index, batch_size=2, store=dataset_store, num_workers=2, seed=1)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=2, num_workers=2, collate_fn=_keep, persistent_workers=True
    )
    expected = ShardStream(index, batch_size=2, store=dataset_store, num_workers=2, seed=1)
    for epoch, start in ((0, 0), (1, 0), (1, 2)):
        stream.set_epoch(epoch, start)
        expected.set_epoch(epoch, start)
        got = [_key(sample) for batch in loader for sample in batch]
        assert got == [_key(sample) for sample in expected]


def test_a_corrupted_shard_raises_integrity_error(dataset_store: ClipStore):
    index = write_shards(dataset_store, "d", max_bytes=_SMALL)
    shard = index.shards[0]
    path = dataset_store.transport.root / index.folder / shard.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a member: the tar still parses, the sum does not
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=shard.name):
        list(ShardStream(index, batch_size=1, store=dataset_store))
    # Read by a DataLoader worker, the error reaches the training loop.
    stream = ShardStream(index, batch_size=2, store=dataset_store, num_workers=2)
    batches = iter(
        torch.utils.data.DataLoader(stream, batch_size=2, num_workers=2, collate_fn=_keep)
    )
    try:
        list(batches)
    except IntegrityError as error:
        assert shard.name in str(error)
        # Its traceback holds the loader in a reference cycle: left to the garbage collector,
        # the loader's shutdown waits seconds on its workers; released here, it takes none.
        error.__traceback__ = None
    else:
        pytest.fail("a corrupted shard was read without an error")
    del batches
    path.write_bytes(bytes(data[: len(data) // 3]))  # truncated mid-member
    with pytest.raises(IntegrityError):
        list(ShardStream(index, batch_size=1, store=dataset_store))
    # --repair finds the stored bytes corrupted and rewrites them.
    write_shards(dataset_store, "d", max_bytes=_SMALL, repair=True)
    assert dataset_store.drain_repairs() == [f"{index.folder}{shard.name}"]
    assert len(list(ShardStream(index, batch_size=1, store=dataset_store))) == 24


def test_rerun_rewrites_nothing_and_growth_keeps_earlier_shards(
    dataset_store: ClipStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = write_shards(dataset_store, "d", max_bytes=_SMALL)
    put = dataset_store.transport.put_file

    def refuse(*args: object) -> None:
        raise AssertionError("an unchanged dataset's shards or index were written again")

    monkeypatch.setattr(dataset_store.transport, "put_file", refuse)
    assert write_shards(dataset_store, "d", max_bytes=_SMALL) == first
    monkeypatch.setattr(dataset_store.transport, "put_file", put)
    # A compaction renames the parts only: the shards stay, the index names the new parts.
    Dataset(dataset_store, "d").compact()
    compacted = write_shards(dataset_store, "d", max_bytes=_SMALL)
    assert compacted.shards == first.shards and compacted.parts != first.parts
    # New clips: the full shards before them keep their names, the stale last one goes.
    _add_clips(dataset_store, tmp_path, 6, first=24)
    grown = write_shards(dataset_store, "d", max_bytes=_SMALL)
    assert grown.samples == 30
    assert grown.shards[: len(first.shards) - 1] == first.shards[:-1]
    names = {key.rpartition("/")[2] for key in dataset_store.list(grown.folder)}
    assert names == {INDEX_NAME} | {shard.name for shard in grown.shards}
    # Shards are training data, not part of the dataset's exported lists.
    exported = Dataset(dataset_store, "d").export(tmp_path / "out")
    assert not (exported / "shards").exists()


def test_a_crash_before_the_index_leaves_the_old_one_readable(
    dataset_store: ClipStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = write_shards(dataset_store, "d", max_bytes=_SMALL)
    _add_clips(dataset_store, tmp_path, 6, first=24)

    def crash(key: str, value: Any) -> None:
        raise KeyboardInterrupt("killed before the index")

    monkeypatch.setattr(dataset_store, "put_json", crash)
    with pytest.raises(KeyboardInterrupt):
        write_shards(dataset_store, "d", max_bytes=_SMALL)
    monkeypatch.undo()
    old = ShardIndex.load(f"{first.folder}{INDEX_NAME}", dataset_store)
    assert old == first
    assert len(list(ShardStream(old, batch_size=1, store=dataset_store))) == 24
    grown = write_shards(dataset_store, "d", max_bytes=_SMALL)  # and the next run cleans up
    names = {key.rpartition("/")[2] for key in dataset_store.list(grown.folder)}
    assert names == {INDEX_NAME} | {shard.name for shard in grown.shards}


def test_a_copied_folder_reads_without_the_store(dataset_store: ClipStore, tmp_path: Path):
    index = write_shards(dataset_store, "d", max_bytes=_SMALL)
    copy = tmp_path / "copy"
    shutil.copytree(dataset_store.transport.root / index.folder, copy)
    local = ShardIndex.load(copy)
    assert local.local and local.shards == index.shards
    expected = [_key(s) for s in ShardStream(index, batch_size=2, store=dataset_store, seed=3)]
    assert [_key(s) for s in ShardStream(local, batch_size=2, seed=3)] == expected


def test_options_and_sizes_are_checked(dataset_store: ClipStore):
    index = write_shards(dataset_store, "d", max_bytes=_SMALL)
    with pytest.raises(ValueError, match="rank"):
        ShardStream(index, batch_size=2, rank=2, world=2)
    with pytest.raises(ConfigError, match="batch of 8"):
        ShardStream(index, batch_size=8, world=2, num_workers=2)  # 24 < 2 x 2 x 8
    with pytest.raises(ConfigError, match="no clips"):
        write_shards(dataset_store, "empty")


def test_shards_on_s3(s3_settings: StoreSettings, tmp_path: Path):
    store = ClipStore.from_settings(s3_settings)
    _add_clips(store, tmp_path, 16)  # 2 ranks x 2 workers x 2 batches x 2: none dropped
    index = write_shards(store, "d", max_bytes=_SMALL)
    uri = store.uri(f"{index.folder}{INDEX_NAME}")
    assert uri.startswith("s3://")
    loaded = ShardIndex.load(uri, store)
    assert loaded == index == ShardIndex.load(uri.removesuffix(f"/{INDEX_NAME}"), store)
    keys = [key for rank in (0, 1) for batch in _rank_batches(loaded, store, rank) for key in batch]
    assert sorted(keys) == sorted(r.clip.key for r in Dataset(store, "d").snapshot().clips)
    # Flipped bytes behind the store's back, keeping the recorded sum: the stream refuses them.
    shard = index.shards[0]
    data = bytearray(store.get_bytes(f"{index.folder}{shard.name}"))
    data[len(data) // 2] ^= 0xFF
    store.transport.client.put_object(
        s3_settings.bucket,
        f"{index.folder}{shard.name}",
        io.BytesIO(bytes(data)),
        len(data),
        metadata={"sha256": shard.sha256},
    )
    with pytest.raises(IntegrityError):
        list(ShardStream(loaded, batch_size=1, store=store))


def test_cli_writes_shards_and_names_the_index(
    dataset_store: ClipStore, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("H2A_STORE_ROOT", str(dataset_store.transport.root))
    result = CliRunner().invoke(
        main, ["dataset", "shards", "d", "--max-bytes", str(_SMALL), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    index_uri = dataset_store.uri(ClipStore.shard_key("d", INDEX_NAME))
    assert f"data.train={index_uri}" in result.output
    index = ShardIndex.load(index_uri)
    assert index.samples == 24 and f"{len(index.shards)} shards, 24 samples" in result.output
    assert json.loads(Path(index.folder, INDEX_NAME).read_text())["dataset"] == "d"
