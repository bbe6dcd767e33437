"""The training loader's data path: augmentation on the device equals the CPU path, clip records
replace probing and per-epoch hashing, and pre-training streams from shards and resumes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import services.common.store as store_module
from services.common.dataset import Dataset
from services.common.records import ClipMedia, ClipRecord, Rejection
from services.common.shards import write_shards
from services.common.store import ClipStore
from services.trainer.data import (
    Batch,
    VideoDataset,
    VideoEntry,
    collate,
    read_clip_records,
    with_clip_records,
)
from services.trainer.main import run
from services.trainer.recipes import apply_overrides, get_recipe
from services.trainer.synthetic import write_moving_shapes
from services.trainer.transforms import PretrainAugment, pretrain_transform

SCALES = (1.0, 0.875, 0.75, 0.66)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # 8 training videos of 16 frames, 32x32.
    return write_moving_shapes(tmp_path_factory.mktemp("shapes"), 2, 16, 32, seed=3)


def _videos(shapes: dict[str, Path]) -> list[Path]:
    return [Path(line.split()[0]) for line in shapes["train"].read_text().splitlines()]


def _dataset(entries: list[VideoEntry], store: ClipStore | None, **options) -> VideoDataset:
    return VideoDataset(
        entries,
        pretrain_transform(24, SCALES, flip=True),
        num_frames=8,
        sampling_rate=2,
        num_sample=4,
        masks=lambda g: (torch.rand(8, generator=g) > 0.9, torch.rand(8, generator=g) > 0.5),
        store=store,
        seed=11,
        **options,
    )


def test_device_augmentation_gives_the_cpu_paths_clips(shapes: dict[str, Path]) -> None:
    entries = [VideoEntry(str(path), 0) for path in _videos(shapes)[:3]]
    cpu = _dataset(entries, None)
    deferred = _dataset(entries, None, deferred=PretrainAugment(24, SCALES, flip=True))
    keys = [(1, index) for index in range(3)]
    expected = collate([cpu[key] for key in keys]).items
    waiting = collate([deferred[key] for key in keys]).items
    # The worker hands over uint8 frames (one decode per video) and the draws, not clips.
    assert len(waiting[0].videos) == 3 and waiting[0].videos[0].dtype == torch.uint8
    clips = deferred.deferred.apply_batch(waiting[0], torch.device("cpu"))
    assert clips.shape == expected[0].shape == (12, 3, 8, 24, 24)
    assert torch.equal(clips, expected[0])
    for a, b in zip(waiting[1:], expected[1:], strict=True):
        assert torch.equal(a, b)  # labels, masks, indices
    # Distinct draws: repeated augmentation gives num_sample different clips of one window.
    assert not torch.equal(clips[0], clips[1])


def test_batches_pin_for_asynchronous_copies(shapes: dict[str, Path]) -> None:
    entries = [VideoEntry(str(path), 0) for path in _videos(shapes)[:2]]
    deferred = _dataset(entries, None, deferred=PretrainAugment(24, SCALES, flip=True))
    batch = collate([deferred[(0, 0)], deferred[(0, 1)]])
    if not torch.cuda.is_available():
        pytest.skip("pinning needs a CUDA device")
    pinned = batch.pin_memory()
    assert isinstance(pinned, Batch) and pinned.items[0].videos[0].is_pinned()


def _commit(store: ClipStore, videos: list[Path]) -> list[ClipRecord]:
    """The videos as the clips of a published dataset ``d``, with what ``encode_clip``
    measures of each."""
    media = ClipMedia(16, 25.0, 0.64, 32, 32, "h264", keyframe_interval=16, bframes=1)
    records = []
    for n, path in enumerate(videos):
        source_id = hashlib.sha256(f"shape-{n}".encode()).hexdigest()
        ref = store.put_file(ClipStore.clip_key(source_id, 0, 16), path)
        records.append(
            ClipRecord(ref, source_id, str(path), f"tag{n % 2}", 0, 16, 25.0, 4, media=media)
        )
    Dataset(store, "d").add(records)
    Dataset(store, "d").publish()
    return records


def test_clip_records_stand_in_for_probes_and_hashes(
    shapes: dict[str, Path], local_store: ClipStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _commit(local_store, _videos(shapes)[:2])
    published = Dataset(local_store, "d").view_uri("clips.jsonl")
    entries = [VideoEntry(record.clip.uri, 0) for record in records]
    entries = with_clip_records(entries, read_clip_records(published, local_store))
    assert [(e.video_frames, e.sha256) for e in entries] == [
        (16, record.clip.sha256) for record in records
    ]
    hashed: list[Path] = []
    real_sha256 = store_module.file_sha256
    monkeypatch.setattr(
        store_module, "file_sha256", lambda path: hashed.append(path) or real_sha256(path)
    )
    dataset = _dataset(entries, local_store)
    for epoch in range(3):
        assert not isinstance(dataset[(epoch, 0)], Rejection)
    assert len(hashed) == 1  # verified once per process, not once per epoch
    # A record whose frame count the file does not have: refused without hashing it again.
    wrong = _dataset([VideoEntry(entries[1].path, 0, video_frames=20)], local_store)
    rejected = wrong[(0, 0)]
    assert isinstance(rejected, Rejection) and rejected.reason == "INTEGRITY_ERROR"
    assert "16 frames, its clip record says 20" in rejected.detail


def _losses(output: Path) -> dict[int, float]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return {row["step"]: row["loss"] for row in map(json.loads, lines) if "loss" in row}


def test_pretraining_streams_shards_and_resumes_exactly(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    _commit(local_store, _videos(shapes))
    index = write_shards(local_store, "d", max_bytes=64 << 10)
    assert index.samples == 8  # one shard: the 2 workers split it by member
    index_uri = local_store.uri(f"{local_store.shard_prefix('d')}index.json")

    def config(output: Path, *extra: str):
        return apply_overrides(
            get_recipe("tiny_pretrain"),
            [
                f"data.train={index_uri}",
                f"runtime.output={json.dumps(str(output))}",
                f"checkpoint.run={output.name}",
                "data.batch_size=2",
                "data.augment_on=device",  # the device path, run on the CPU
                "data.num_workers=2",  # a resume must find each worker's place
                "runtime.progress=false",
                "checkpoint.interval_steps=100",
                *extra,
            ],
        )

    full = run("pretrain", config(tmp_path / "full"), local_store)
    assert full.steps == 8  # 8 clips, 2 per step, 2 epochs
    stopped = run(
        "pretrain",
        config(tmp_path / "cut", "runtime.max_steps=5", "checkpoint.interval_steps=5"),
        local_store,
    )
    assert stopped.steps == 5
    assert run("pretrain", config(tmp_path / "cut"), local_store).steps == 8
    expected, got = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, 9))
    for step in range(1, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-7), step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_augmentation_on_a_gpu_matches_the_cpu(shapes: dict[str, Path]) -> None:
    entries = [VideoEntry(str(path), 0) for path in _videos(shapes)[:2]]
    deferred = _dataset(entries, None, deferred=PretrainAugment(24, SCALES, flip=True))
    frames = collate([deferred[(0, 0)], deferred[(0, 1)]]).items[0]
    on_gpu = deferred.deferred.apply_batch(frames, torch.device("cuda"))
    on_cpu = deferred.deferred.apply_batch(frames, torch.device("cpu"))
    # Resampling kernels differ in rounding between devices, by under one grey level.
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=4 / 255 / 0.225)
