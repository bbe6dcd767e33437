"""Training shards: a dataset's clips as WebDataset tars in the store, streamed back in order.

Writing (``write_shards``) packs the clips of one dataset snapshot, in commit order, into tars of
about ``max_bytes``; each sample is ``{key}.json`` (the ClipRecord plus its ``label``) and
``{key}.mp4`` (the clip, verified against the record's sha256 as it is packed). The tars are
reproducible (fixed owner, mode and mtime), so equal content gives equal bytes, and named by
their position and sha256 (``{n:06d}-{sha256[:16]}.tar``): an index never sees a shard change
under it. Each shard is built in scratch and put through the store, ``index.json`` is written
last, and only then are the shards it no longer names deleted, so a crash at any point leaves the
previous index and its shards readable. A dataset that only grew keeps its earlier shards. Runs
over one dataset go one at a time (a pipeline step): a second writer's cleanup could delete the
shards of the first's index.

Reading (``ShardStream``) is deterministic given (seed, epoch) and the reading layout (world,
workers, batch size):

* The epoch's shard order is a permutation seeded by (seed, epoch); the samples of the shards in
  that order form one sequence, and each *slot* (rank x DataLoader worker) reads one contiguous
  range of it, ``samples_per_worker`` long. Ranges end on the same boundaries for every rank, so
  every rank yields exactly as many samples (DDP needs equal steps); what does not fill a batch
  of every slot is the tail of the permuted sequence, left out. With many shards a slot reads
  whole shards; with fewer shards than slots (a small dataset) slots share shards, each reading
  past the members before its range without yielding them: member-level splitting.
* Each slot passes its range through a shuffle buffer seeded by (seed, epoch, rank, worker).
* Every worker yields the same number of whole batches, so DataLoader's round-robin over workers
  puts batch ``j`` of a rank from worker ``j % num_workers``: the batch order is fixed.
* ``set_epoch(epoch, start_batches)`` resumes part-way: loader worker ``k`` takes the role of
  worker ``(k + start_batches) % num_workers`` and skips (reads, never yields) the samples of
  that worker's batches among the first ``start_batches``, so the loader continues with exactly
  the batches an uninterrupted epoch would have given next. The epoch position lives in shared
  memory, so ``persistent_workers=True`` loaders see it when the next epoch's iterator starts.

Shard sums are checked as the bytes stream in (local file or S3 GET, nothing buffered to
disk): a slot that reads a shard to its end raises IntegrityError there when the shard does not
match the index. Members of a bad shard it already yielded come before the error; the error
ends the epoch loudly (nothing skips it), which is why streaming was chosen over buffering each
shard in scratch first (1 GB of disk per worker, and no sample until the whole shard arrived).
A slot that stops inside a shard leaves its end to the slot whose range continues there, and
the last slot reads its last shard to the end, so every shard read in an epoch is checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import torch.utils.data
import webdataset as wds
from tqdm import tqdm
from webdataset.tariterators import group_by_keys, tar_file_expander

from services.common.dataset import Dataset, Snapshot
from services.common.errors import ConfigError, IntegrityError, ObjectNotFound
from services.common.records import ClipRecord
from services.common.scratch import scratch_dir
from services.common.store import ClipStore, VerifyingReader, file_sha256

__all__ = [
    "DEFAULT_MAX_BYTES",
    "INDEX_NAME",
    "ShardIndex",
    "ShardInfo",
    "ShardStream",
    "write_shards",
]

_logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
DEFAULT_MAX_BYTES = 1 << 30
_FORMAT = 1
_BLOCK = 512
# tarfile ends an archive with two zero blocks and pads it to whole 20-block records.
_RECORD = 20 * _BLOCK


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One tar of an index."""

    name: str
    """File name beside ``index.json`` (``{n:06d}-{sha256[:16]}.tar``)."""
    sha256: str
    size: int
    samples: int
    """Samples it holds (each a ``.json`` and an ``.mp4`` member)."""


@dataclass(frozen=True, slots=True)
class ShardIndex:
    """What ``index.json`` says: the shards, in writing order, and what they were built from.

    Shards are named relative to the index, so a copied folder (a node's local disk, another
    bucket) reads like the original.
    """

    dataset: str
    version: str
    """The snapshot version (``Snapshot.version``, as in ``dataset.json``) the shards hold."""
    parts: tuple[str, ...]
    """The dataset parts that snapshot folded."""
    content: str
    """sha256 of every sample's key and JSON (clip sums included), in order: equal content,
    equal shards, whatever parts it came from (a compaction renames parts only)."""
    max_bytes: int
    labels: dict[str, int]
    """hashtag -> label, as ``labels.json``."""
    shards: tuple[ShardInfo, ...]
    folder: str = ""
    """Where the shards are: a store prefix ending in ``/``, or a local folder when ``local``."""
    local: bool = False

    @property
    def samples(self) -> int:
        return sum(shard.samples for shard in self.shards)

    def to_json(self) -> dict[str, Any]:
        """The ``index.json`` content (without where it was read from)."""
        return {
            "format": _FORMAT,
            "dataset": self.dataset,
            "version": self.version,
            "parts": list(self.parts),
            "content": self.content,
            "max_bytes": self.max_bytes,
            "labels": self.labels,
            "samples": self.samples,
            "shards": [
                {"name": s.name, "sha256": s.sha256, "size": s.size, "samples": s.samples}
                for s in self.shards
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: str, local: bool = False) -> ShardIndex:
        """The index from its ``index.json`` content and the folder it was read from."""
        if data.get("format") != _FORMAT:
            raise ConfigError(f"shard index in {folder} has format {data.get('format')!r}")
        return cls(
            dataset=data["dataset"],
            version=data["version"],
            parts=tuple(data["parts"]),
            content=data["content"],
            max_bytes=int(data["max_bytes"]),
            labels={tag: int(label) for tag, label in data["labels"].items()},
            shards=tuple(ShardInfo(**shard) for shard in data["shards"]),
            folder=folder,
            local=local,
        )

    @classmethod
    def load(cls, location: str | Path, store: ClipStore | None = None) -> ShardIndex:
        """Read an index from a store or a local folder.

        Args:
            location: a store key or URI of ``index.json`` or of its folder,
                a ``file://`` URI, or a local path of ``index.json`` or of its folder.
            store: the store that keys and non-file URIs belong to.

        Returns:
            The index; its shards are read from the same place.

        Raises:
            ConfigError: a store location without a store, or an unknown index format.
            ObjectNotFound: no index there.
        """
        text = str(location)
        scheme = urlparse(text).scheme if "://" in text else ""
        if scheme == "file":  # a local store's URI reads in place, with or without the store
            path = Path(unquote(urlparse(text).path))
        elif scheme or (store is not None and not Path(text).exists()):
            if store is None:
                raise ConfigError(f"shard index {text!r} is in a store, but no store configured")
            return cls._from_store(store, store.key_from_uri(text) if scheme else text)
        else:
            path = Path(text)
        if path.is_dir():
            path = path / INDEX_NAME
        if not path.is_file():
            raise ObjectNotFound(f"no shard index at {path}")
        return cls.from_json(json.loads(path.read_text()), str(path.parent), local=True)

    @classmethod
    def _from_store(cls, store: ClipStore, key: str) -> ShardIndex:
        if PurePosixPath(key).name != INDEX_NAME:  # the folder, with or without its slash
            key = f"{key.rstrip('/')}/{INDEX_NAME}"
        folder = key.rpartition("/")[0] + "/"
        return cls.from_json(store.get_json(key), folder)

    @contextlib.contextmanager
    def open(self, shard: ShardInfo, store: ClipStore | None) -> Iterator[VerifyingReader]:
        """A shard's bytes as a stream checked against its sha256 at the end."""
        if self.local:
            path = Path(self.folder) / shard.name
            if not path.is_file():
                raise ObjectNotFound(f"no shard {path}")
            with open(path, "rb") as raw:
                yield VerifyingReader(raw, shard.sha256, shard.name)
            return
        if store is None:
            raise ConfigError(f"shards in {self.folder} are in a store, but no store configured")
        with store.open_stream(f"{self.folder}{shard.name}", shard.sha256) as stream:
            yield stream


def _tar_bytes(size: int) -> int:
    return _BLOCK + -(-size // _BLOCK) * _BLOCK  # header + data padded to whole blocks


def _member_key(record: ClipRecord) -> str:
    # WebDataset splits a member name at its first dot: the key keeps none.
    stem = PurePosixPath(record.clip.key).with_suffix("").as_posix().removeprefix("clips/")
    return stem.replace(".", "_")


def _members(snapshot: Snapshot) -> list[tuple[str, bytes, ClipRecord]]:
    """(key, JSON member, record) per clip, in the snapshot's commit order."""
    members = []
    for record in snapshot.clips:
        meta = {**json.loads(record.to_json()), "label": snapshot.labels[record.hashtag]}
        members.append((_member_key(record), json.dumps(meta, sort_keys=True).encode(), record))
    return members


def _content(members: list[tuple[str, bytes, ClipRecord]]) -> str:
    digest = hashlib.sha256(f"h2a-shards-{_FORMAT}\n".encode())
    for key, meta, _ in members:
        digest.update(f"{key}\n".encode() + meta + b"\n")
    return digest.hexdigest()


def _pack(
    members: list[tuple[str, bytes, ClipRecord]], max_bytes: int
) -> list[list[tuple[str, bytes, ClipRecord]]]:
    """Consecutive groups of about ``max_bytes`` of tar each (a bigger clip gets its own)."""
    groups: list[list[tuple[str, bytes, ClipRecord]]] = []
    size = 0
    for member in members:
        cost = _tar_bytes(len(member[1])) + _tar_bytes(member[2].clip.size)
        if not groups or size + cost + _RECORD > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(member)
        size += cost
    return groups


def _write_tar(store: ClipStore, members: list[tuple[str, bytes, ClipRecord]], path: Path) -> None:
    # Fixed owner, mode and mtime: the same samples give the same bytes, so a re-run finds the
    # stored shard intact and writes nothing.
    with open(path, "wb") as handle:
        tar = wds.TarWriter(handle, user="h2a", group="h2a", encoder=False, mtime=0)
        for key, meta, record in members:
            with store.open_local(record.clip) as clip:  # verified against the record's sum
                tar.write({"__key__": key, "json": meta, "mp4": clip.read_bytes()})
        tar.close()


def _stored_index(store: ClipStore, dataset: str) -> ShardIndex | None:
    key = ClipStore.shard_key(dataset, INDEX_NAME)
    if not store.exists(key):
        return None
    try:
        return ShardIndex.from_json(store.get_json(key), ClipStore.shard_prefix(dataset))
    except (IntegrityError, ConfigError, KeyError, TypeError, ValueError) as error:
        _logger.warning(
            "shard index unreadable; rebuilding the shards",
            extra={"dataset": dataset, "key": key, "error": str(error)},
        )
        return None


def _intact(store: ClipStore, index: ShardIndex) -> bool:
    """Every shard present with the sum and size the index names (by stat, not by reading)."""
    for shard in index.shards:
        found = store.stat(f"{index.folder}{shard.name}")
        if found is None or (found.sha256, found.size) != (shard.sha256, shard.size):
            return False
    return True


def write_shards(
    store: ClipStore,
    dataset: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    snapshot: Snapshot | None = None,
    repair: bool = False,
    progress: bool = False,
) -> ShardIndex:
    """Write a dataset's clips as WebDataset shards plus ``index.json`` into the store.

    Args:
        store: the clip store holding the dataset and its clips.
        dataset: the dataset's name; shards go to ``ClipStore.shard_prefix(dataset)``.
        max_bytes: target size of a shard (a clip larger than it gets a shard of its own).
        snapshot: the state to write; default: the dataset's current snapshot.
        repair: rebuild every shard even when the index says they are unchanged; a stored shard
            whose bytes no longer match is rewritten (``ClipStore.drain_repairs`` reports it).
        progress: show a progress bar over the clips.

    Returns:
        The index written (or the unchanged one found).

    Raises:
        ValueError: ``max_bytes`` is not positive.
        ConfigError: the dataset has no clips.
        IntegrityError: a clip does not match its record's sha256.
        ObjectNotFound: a clip of the dataset is missing from the store.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    snapshot = snapshot or Dataset(store, dataset).snapshot()
    if not snapshot.clips:
        raise ConfigError(f"dataset {dataset!r} has no clips to shard")
    members = _members(snapshot)
    content = _content(members)
    index_key = ClipStore.shard_key(dataset, INDEX_NAME)
    folder = ClipStore.shard_prefix(dataset)
    previous = _stored_index(store, dataset)
    if (
        not repair
        and previous is not None
        and (previous.content, previous.max_bytes) == (content, max_bytes)
        and _intact(store, previous)
    ):
        # Same samples: only the parts they came from may differ (an identical index is not
        # rewritten by the store either).
        index = replace(previous, version=snapshot.version, parts=snapshot.parts)
        store.put_json(index_key, index.to_json())
        return index
    shards = []
    bar = tqdm(total=len(members), desc=f"shards {dataset}", unit="clip", disable=not progress)
    with bar, scratch_dir("shards-") as scratch:
        for number, group in enumerate(_pack(members, max_bytes)):
            path = scratch / "shard.tar"
            _write_tar(store, group, path)
            name = f"{number:06d}-{file_sha256(path)[:16]}.tar"
            ref = store.put_file(f"{folder}{name}", path)
            path.unlink()
            shards.append(ShardInfo(name, ref.sha256, ref.size, len(group)))
            bar.update(len(group))
    index = ShardIndex(
        dataset=dataset,
        version=snapshot.version,
        parts=snapshot.parts,
        content=content,
        max_bytes=max_bytes,
        labels=dict(snapshot.labels),
        shards=tuple(shards),
        folder=folder,
    )
    store.put_json(index_key, index.to_json())
    # Only now that the new index is visible: shards of the old one, and of crashed runs.
    kept = {f"{folder}{shard.name}" for shard in shards} | {index_key}
    stale = [key for key in store.list(folder) if key not in kept]
    for key in stale:
        store.delete(key)
    _logger.info(
        "dataset sharded",
        extra={
            "dataset": dataset,
            "version": snapshot.version,
            "shards": len(shards),
            "samples": index.samples,
            "removed": len(stale),
        },
    )
    return index


def _shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """A shuffle buffer of ``size`` items (``size <= 1``: the order as it comes)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = rng.randrange(size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


Sample = tuple[dict[str, Any], bytes]


class ShardStream(torch.utils.data.IterableDataset):
    """A shard index as a stream of ``(record, mp4)``, or of ``transform(record, mp4)``.

    See the module docstring for the order. The DataLoader must use ``batch_size`` and
    ``num_workers`` as given here; ``persistent_workers`` may be on. Resuming needs the same
    seed, world, workers and batch size as the interrupted run.

    Args:
        index: the shards.
        batch_size: the loader's batch size (per rank).
        store: the store a store index reads from (not needed for a local folder).
        rank: this process's rank.
        world: number of ranks.
        num_workers: the loader's ``num_workers`` (0: read in the loading process).
        seed: seeds the shard order and the shuffle buffers, with the epoch.
        shuffle_buffer: samples each worker holds to shuffle (memory: that many clips).
        transform: applied in the worker to each yielded sample (decode, augment).

    Raises:
        ValueError: an option out of range.
        ConfigError: too few samples for one batch per worker on every rank.
    """

    def __init__(
        self,
        index: ShardIndex,
        *,
        batch_size: int,
        store: ClipStore | None = None,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        shuffle_buffer: int = 64,
        transform: Callable[[dict[str, Any], bytes], Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world={world}), got {rank}")
        if num_workers < 0:
            raise ValueError(f"num_workers must not be negative, got {num_workers}")
        self.index = index
        self.store = store
        self.batch_size = batch_size
        self.rank = rank
        self.world = world
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.transform = transform
        self.workers = max(num_workers, 1)
        slots = world * self.workers
        self.batches_per_worker = index.samples // (slots * batch_size)
        if self.batches_per_worker == 0:
            raise ConfigError(
                f"{index.samples} samples cannot give each of {world} ranks x {self.workers} "
                f"workers a batch of {batch_size}"
            )
        # (epoch, start_batches) in shared memory: forked or spawned workers (persistent ones
        # included) read the value set_epoch wrote before the loader's next iterator starts.
        self._position = multiprocessing.RawArray("q", 2)

    @property
    def samples_per_worker(self) -> int:
        return self.batches_per_worker * self.batch_size

    @property
    def epoch(self) -> int:
        """The epoch ``set_epoch`` last set (read in the workers too)."""
        return self._position[0]

    def __len__(self) -> int:
        """Samples this rank yields in a whole epoch (a resumed epoch yields fewer)."""
        return self.workers * self.samples_per_worker

    def set_epoch(self, epoch: int, start_batches: int = 0) -> None:
        """Read epoch ``epoch`` from its ``start_batches``-th loader batch on; call it before
        each epoch's ``iter(loader)``."""
        if start_batches < 0:
            raise ValueError(f"start_batches must not be negative, got {start_batches}")
        self._position[0], self._position[1] = epoch, start_batches

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self._position[0], self._position[1]
        info = torch.utils.data.get_worker_info()
        if info is not None:
            if info.num_workers != self.workers:
                raise ValueError(
                    f"the loader has {info.num_workers} workers, the stream num_workers="
                    f"{self.num_workers}"
                )
            yield from self._worker(epoch, start, info.id)
            return
        # In-process (num_workers=0, or a look at the order): the loader's round-robin over
        # the workers, batch by batch, so the order is the same either way.
        streams = [self._worker(epoch, start, worker) for worker in range(self.workers)]
        while streams:
            for stream in list(streams):
                batch = list(islice(stream, self.batch_size))
                if not batch:
                    streams.remove(stream)
                yield from batch

    def _worker(self, epoch: int, start: int, worker: int) -> Iterator[Any]:
        role = (worker + start) % self.workers
        # Batches j < start that came from worker `role`: those with j % workers == role.
        done = max(0, -(-(start - role) // self.workers))
        slot = self.rank * self.workers + role
        rng = random.Random(f"{self.seed}:{epoch}:{self.rank}:{role}")
        samples = _shuffled(self._range(epoch, slot), self.shuffle_buffer, rng)
        for record, mp4 in islice(samples, done * self.batch_size, None):
            yield (record, mp4) if self.transform is None else self.transform(record, mp4)

    def _range(self, epoch: int, slot: int) -> Iterator[Sample]:
        """Slot ``slot``'s samples of the epoch's shard sequence, in order."""
        shards = list(self.index.shards)
        random.Random(f"{self.seed}:{epoch}").shuffle(shards)
        begin = slot * self.samples_per_worker
        end = begin + self.samples_per_worker
        last = slot == self.world * self.workers - 1
        offset = 0
        for shard in shards:
            if offset >= end:
                break
            if offset + shard.samples > begin:
                # The last slot also reads the dropped tail of its final shard, so it is checked.
                to_end = last or offset + shard.samples <= end
                yield from self._read(shard, begin - offset, end - offset, to_end)
            offset += shard.samples

    def _read(self, shard: ShardInfo, begin: int, end: int, to_end: bool) -> Iterator[Sample]:
        """Members ``[begin, end)`` of a shard (read past the others, never decoded); with
        ``to_end`` the shard is read to its end, which checks its sha256."""
        with self.index.open(shard, self.store) as stream:
            try:
                tar = group_by_keys(tar_file_expander([{"url": shard.name, "stream": stream}]))
                for number, sample in enumerate(tar):
                    if number >= end and not to_end:
                        return  # the slot that reads on from here checks the shard
                    if begin <= number < end:
                        yield json.loads(sample["json"]), sample["mp4"]
                stream.drain()
            except (tarfile.TarError, KeyError, ValueError) as error:
                stream.drain()  # a sum that does not match says more than a broken member
                raise IntegrityError(
                    f"shard {shard.name} is not a readable shard ({error})", key=shard.name
                ) from error
