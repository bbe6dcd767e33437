"""Datasets for pre-training, fine-tuning and testing, and the readers of each list format.

Every reader returns ``VideoEntry`` rows (a path or store URI and an integer label), so one
dataset serves all formats:

- VideoMAE list files, space or comma separated. Labelled lists (``train.csv``/``val.csv``/
  ``test.csv``): ``path label`` per video file, ``dir total label`` per frame folder (the
  reference's raw-frame lists, Something-Something V2's among them: label LAST). Pre-training
  lists (the clip store's ``pretrain.csv``, the reference's hybrid lists): ``path start total``,
  ``total`` -1 for a video file, else a frame folder of ``total`` frames numbered from ``start``.
  A 3-column line means different things in the two, so the reader is told which it reads.
- UCF101 official splits: ``classInd.txt`` (1-based ``index name``), ``trainlist0N.txt``
  (``Class/v_x.avi label``), ``testlist0N.txt`` (``Class/v_x.avi``).
- HMDB51: ``<class>_test_splitN.txt`` with ``video tag`` (0 unused, 1 train, 2 test).
- Kinetics-400 CSV: ``label,youtube_id,time_start,time_end,split`` rows name the files
  ``root/{youtube_id}_{start:06d}_{end:06d}.mp4``.
- Something-Something V2: ``labels.json`` (name -> id) and ``train.json``/``validation.json``
  (``id``, ``template`` whose ``[something]`` brackets are removed to match the label names).

Video files are decoded only through ``services.common.video.VideoReader`` (on the worker's
thread: one worker, one core), from a file or from a shard member's bytes; its demux pass gives
the frame count, so no video is probed. A published dataset's ``clips.jsonl``
(``with_clip_records``) adds each clip's sha256, so a store checks a clip once per process, and
its frame count, so a file that is not the clip it names fails without being hashed. Frame
folders are read image by image (``FrameFolders`` names the files). An unreadable video is
never replaced by another one: the item comes back as a ``Rejection`` record, the collate
function moves it out of the batch, and the engine reports and counts it.

Pre-training's augmentation can wait for the accelerator (``PretrainAugment``): the worker then
draws each clip's crop and flip under the item's seed and hands over the decoded uint8 frames
(``Frames``), which ``PretrainAugment.apply_batch`` cuts on the device, a quarter of the bytes
of ``num_sample`` float clips through shared memory and the host-to-device copy.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import random
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from services.common.errors import H2AError, IntegrityError, ObjectNotFound, UnreadableVideo
from services.common.records import ClipRecord, ObjectRef, Rejection
from services.common.shards import ShardStream
from services.common.store import ClipStore
from services.common.video import VideoReader
from services.trainer.transforms import Frames, PretrainAugment

__all__ = [
    "VIDEO_SUFFIXES",
    "Batch",
    "FrameFolders",
    "MultiViewDataset",
    "ResumableSampler",
    "ShardVideoDataset",
    "VideoDataset",
    "VideoEntry",
    "build_loader",
    "collate",
    "pretrain_window",
    "read_class_names",
    "read_clip_records",
    "read_entries",
    "read_hmdb51",
    "read_kinetics_csv",
    "read_list",
    "read_ssv2",
    "read_ucf101",
    "train_segments",
    "train_window",
    "val_segments",
    "val_window",
    "view_windows",
    "with_clip_records",
]

_logger = logging.getLogger(__name__)

_NO_STRIDES: Mapping[str, int] = MappingProxyType({})

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")
"""File types a list line names as a video file, not a folder of frames."""


@dataclass(frozen=True, slots=True)
class VideoEntry:
    path: str
    """A video file or a folder of frames: a local path or a ``file://``/``s3://`` URI."""
    label: int
    frames: int = -1
    """A frame folder's frame count; -1 for a video file (counted when it is opened)."""
    start: int | None = None
    """The number of a frame folder's first frame file; None for the configured default."""
    video_frames: int = -1
    """A video file's frame count from its clip record; -1 when there is none."""
    sha256: str = ""
    """A video file's sha256 from its clip record."""


# --- readers -----------------------------------------------------------------------------


def _resolve(path: str, root: str) -> str:
    if "://" in path or not root or Path(path).is_absolute():
        return path
    return str(Path(root) / path)


def _list_entry(parts: list[str], root: str, labelled: bool) -> VideoEntry:
    path = _resolve(parts[0], root)
    if len(parts) == 2:
        return VideoEntry(path, int(parts[1]))
    if not labelled:
        start, total = int(parts[1]), int(parts[2])
        return VideoEntry(path, 0) if total < 0 else VideoEntry(path, 0, total, start)
    total, label = int(parts[1]), int(parts[2])
    if label < 0 or total < 0:
        raise ValueError("is a pre-training line (path start total), not path/dir total label")
    # A video file with its frame count beside it: the container counts its frames itself.
    is_video = Path(path).suffix.lower() in VIDEO_SUFFIXES
    return VideoEntry(path, label) if is_video else VideoEntry(path, label, total)


def read_list(text: str, root: str = "", *, labelled: bool) -> list[VideoEntry]:
    """VideoMAE list lines (see the module docstring) as entries.

    Args:
        text: the list file's text.
        root: the folder relative paths are resolved against.
        labelled: a classification list (``path label``, ``dir total label``) rather than a
            pre-training one (``path start total``); unlabelled entries get label 0.

    Raises:
        ValueError: a line that fits neither form, naming its number.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace(",", " ").split()
        if not 2 <= len(parts) <= 3:
            raise ValueError(
                f"list line {number} has {len(parts)} fields, not path label, dir total label "
                f"or path start total: {line!r}"
            )
        try:
            entries.append(_list_entry(parts, root, labelled))
        except ValueError as error:
            raise ValueError(f"list line {number} {error}: {line!r}") from error
    return entries


def read_ucf101(split_dir: Path, split: int, subset: str, root: str) -> list[VideoEntry]:
    """UCF101 ``trainlist0N``/``testlist0N`` with 0-based labels from ``classInd.txt``."""
    split_dir = Path(split_dir)
    names = read_class_names(split_dir / "classInd.txt")
    index = {name: i for i, name in enumerate(names)}
    name = f"{'train' if subset == 'train' else 'test'}list{split:02d}.txt"
    entries = []
    for line in (split_dir / name).read_text().split("\n"):
        if line.strip():
            video = line.split()[0]
            entries.append(VideoEntry(_resolve(video, root), index[video.split("/")[0]]))
    return entries


def read_hmdb51(split_dir: Path, split: int, subset: str, root: str) -> list[VideoEntry]:
    """HMDB51 ``<class>_test_splitN.txt``: tag 1 is train, 2 test, 0 unused; classes sorted."""
    files = sorted(Path(split_dir).glob(f"*_test_split{split}.txt"))
    if not files:
        raise ObjectNotFound(f"no *_test_split{split}.txt in {split_dir}")
    wanted = "1" if subset == "train" else "2"
    entries = []
    for label, file in enumerate(files):
        class_name = file.name[: -len(f"_test_split{split}.txt")]
        for line in file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == wanted:
                entries.append(VideoEntry(_resolve(f"{class_name}/{parts[0]}", root), label))
    return entries


def read_kinetics_csv(path: Path, root: str, classes: Sequence[str] = ()) -> list[VideoEntry]:
    """Kinetics CSV rows -> ``{youtube_id}_{start:06d}_{end:06d}.mp4``; labels sorted by name."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = list(classes) or sorted({row["label"] for row in rows})
    index = {name: i for i, name in enumerate(names)}
    return [
        VideoEntry(
            _resolve(
                f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_"
                f"{int(float(row['time_end'])):06d}.mp4",
                root,
            ),
            index[row["label"]],
        )
        for row in rows
    ]


def read_ssv2(labels_json: Path, split_json: Path, root: str) -> list[VideoEntry]:
    """Something-Something V2: ``{id}.webm`` labelled by its template without brackets."""
    labels = {name: int(i) for name, i in json.loads(Path(labels_json).read_text()).items()}
    entries = []
    for item in json.loads(Path(split_json).read_text()):
        name = item["template"].replace("[", "").replace("]", "")
        entries.append(VideoEntry(_resolve(f"{item['id']}.webm", root), labels[name]))
    return entries


def with_clip_records(
    entries: Sequence[VideoEntry], records: Iterable[ClipRecord]
) -> list[VideoEntry]:
    """Entries with the frame count and sha256 of the clip records naming their paths (a
    published dataset's ``clips.jsonl``); other entries as they are."""
    known = {record.clip.uri: record for record in records}
    enriched = []
    for entry in entries:
        record = known.get(entry.path)
        if record is not None:
            frames = record.media.frames if record.media is not None else -1
            entry = replace(entry, video_frames=frames, sha256=record.clip.sha256)
        enriched.append(entry)
    return enriched


def read_class_names(path: Path) -> list[str]:
    """Class names by label from ``labels.json`` (name -> id) or ``classInd.txt`` lines."""
    path = Path(path)
    if path.suffix == ".json":
        mapping = json.loads(path.read_text())
        return [name for name, _ in sorted(mapping.items(), key=lambda item: int(item[1]))]
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    first = min(int(row[0]) for row in rows)
    names = [""] * len(rows)
    for row in rows:
        names[int(row[0]) - first] = " ".join(row[1:])
    return names


def _read_text(source: str, store: ClipStore | None) -> str:
    if Path(source).is_file():
        return Path(source).read_text()
    if store is None:
        raise ObjectNotFound(f"no list file {source!r}")
    key = store.key_from_uri(source) if "://" in source else source
    return store.get_text(key)


def read_clip_records(source: str, store: ClipStore | None = None) -> list[ClipRecord]:
    """The clip records of a published dataset's ``clips.jsonl`` (a path, store URI or key)."""
    text = _read_text(source, store)
    return [ClipRecord.from_json(line) for line in text.splitlines() if line.strip()]


def read_entries(
    source: str,
    fmt: str,
    root: str,
    subset: str,
    store: ClipStore | None = None,
    *,
    labelled: bool = True,
) -> list[VideoEntry]:
    """Entries of one split in any supported format.

    ``source`` names, per format: list -> the list file (a path, store URI or store key);
    ucf101/hmdb51 -> ``{split folder}#{split number}``; kinetics -> the CSV; ssv2 ->
    ``{labels.json}#{train.json or validation.json}``. ``labelled``: False for a pre-training
    list (see ``read_list``).
    """
    if fmt == "list":
        return read_list(_read_text(source, store), root, labelled=labelled)
    if fmt in ("ucf101", "hmdb51"):
        folder, _, split = source.partition("#")
        reader = read_ucf101 if fmt == "ucf101" else read_hmdb51
        return reader(Path(folder), int(split or 1), subset, root)
    if fmt == "kinetics":
        return read_kinetics_csv(Path(source), root)
    if fmt == "ssv2":
        labels, _, split = source.partition("#")
        return read_ssv2(Path(labels), Path(split), root)
    raise ValueError(f"data.format {fmt!r} is not one of list, ucf101, hmdb51, kinetics, ssv2")


# --- frame sampling ----------------------------------------------------------------------
#
# Citations are to OpenGVLab/VideoMAEv2 at 29eab1e8a588d1b3ec0cdec7b03a86cca491b74b, whose
# ``dataset/build.py`` builds every Kinetics/UCF101/HMDB51 set as ``VideoClsDataset`` with
# ``num_segment=1`` (lines 50-203) and pre-training as ``HybridVideoMAE`` with
# ``num_segments=1, temporal_jitter=False`` (lines 16-34). Where the reference draws from
# ``np.random``, ours draws the same value range from the ``random.Random`` it is given.


def _linspace_window(start: int, end: int, num_frames: int) -> list[int]:
    """``np.linspace(start, end, num_frames)`` clipped to ``[start, end - 1]`` and truncated,
    in the same float64 arithmetic as numpy (``i * step + start``, the last point ``end``)."""
    if num_frames == 1:
        return [start]
    step = (end - start) / (num_frames - 1)
    points = [i * step + start for i in range(num_frames - 1)] + [float(end)]
    return [int(min(max(p, start), end - 1)) for p in points]


def _short_window(length: int, num_frames: int, stride: int) -> list[int]:
    """Fine-tuning's frames of a video no longer than its ``num_frames * stride`` window
    (``VideoClsDataset.load_video``, ``dataset/datasets.py:299-306``): ``length // stride``
    points over the whole video, then its last frame until there are ``num_frames``."""
    spread = length // stride
    head = _linspace_window(0, length, spread) if spread else []
    return head + [length - 1] * (num_frames - spread)


def train_window(length: int, num_frames: int, stride: int, rng: random.Random) -> list[int]:
    """Fine-tuning's training frames, as ``VideoClsDataset`` in train mode
    (``dataset/datasets.py:293-316``): the window ends at ``end_idx =
    np.random.randint(num_frames * stride, length)``, drawn here as ``rng.randrange`` over the
    same half-open range; the frames are ``linspace(end_idx - num_frames * stride, end_idx,
    num_frames)`` clipped to ``end_idx - 1`` and truncated, so steps are ``stride * T / (T -
    1)`` (4.27 for 16 x 4), not ``stride``. A video no longer than the window draws nothing.
    """
    span = num_frames * stride
    if length <= span:
        return _short_window(length, num_frames, stride)
    end = rng.randrange(span, length)
    return _linspace_window(end - span, end, num_frames)


def val_window(length: int, num_frames: int, stride: int) -> list[int]:
    """Fine-tuning's validation frames: ``train_window``'s with ``end_idx = (num_frames *
    stride + length) // 2`` (``dataset/datasets.py:308-309``), the window centred by its end."""
    span = num_frames * stride
    if length <= span:
        return _short_window(length, num_frames, stride)
    end = (span + length) // 2
    return _linspace_window(end - span, end, num_frames)


def pretrain_window(length: int, num_frames: int, stride: int, rng: random.Random) -> list[int]:
    """Pre-training frames, as ``HybridVideoMAE`` (``dataset/pretrain_datasets.py``): a start
    drawn by ``_sample_train_indices`` (lines 290-311; one segment, no jitter) as
    ``np.random.randint(length - num_frames * stride + 1)``, here ``rng.randrange`` over the
    same range, or 0 when the video is shorter than the window; then ``get_frame_id_list``
    (lines 313-325) steps by ``stride`` only while the next 1-based offset stays below
    ``length``, so a short video repeats its last reachable frame (and at stride 1 a window at
    the very end repeats ``length - 2`` instead of reaching ``length - 1``).
    """
    room = length - num_frames * stride + 1
    position = rng.randrange(room) if room > 0 else 0
    frames = []
    for _ in range(num_frames):
        frames.append(position)
        # The reference compares its 1-based offset: (position + 1) + stride < length.
        if position + 1 + stride < length:
            position += stride
    return frames


def _short_segments(length: int, num_frames: int) -> list[int]:
    """A video shorter than ``num_frames``: all its frames, the first repeated in front."""
    return [0] * (num_frames - length) + list(range(length))


def train_segments(length: int, num_frames: int, rng: random.Random) -> list[int]:
    """TSN sampling for training (Something-Something V2): one random frame per segment.

    As the reference's ``RawFrameClsDataset.load_frame`` (VideoMAE V2 ``dataset/datasets.py``,
    which ``dataset/build.py`` builds for SSV2 with ``clip_len=1, num_segment=num_frames``):
    ``length // num_frames``-frame segments and a random offset in each; a video shorter than
    ``num_frames`` gives its frames with frame 0 repeated in front.
    """
    segment = length // num_frames
    if segment == 0:
        return _short_segments(length, num_frames)
    return [i * segment + rng.randrange(segment) for i in range(num_frames)]


def val_segments(length: int, num_frames: int) -> list[int]:
    """TSN sampling for validation: the middle frame of each ``length // num_frames``-frame
    segment (the reference's ``load_frame`` in validation mode), short videos as in training."""
    segment = length // num_frames
    if segment == 0:
        return _short_segments(length, num_frames)
    return [i * segment + segment // 2 for i in range(num_frames)]


def view_windows(
    length: int,
    num_frames: int,
    stride: int,
    segments: int,
    tsn: bool = False,
    validation: bool = False,
) -> list[list[int]]:
    """The frame indices of the testing views (with ``validation``, of the one validation view).

    Kinetics-style testing, as ``VideoClsDataset`` in test mode (``dataset/datasets.py``): the
    video is decoded at every ``stride``-th frame, the last repeated up to ``num_frames``
    (lines 283-287); view ``s`` is ``num_frames`` consecutive frames of that buffer from
    ``int(s * max((len(buffer) - num_frames) / (segments - 1), 0))`` (lines 185-197). With one
    segment the reference divides by zero; its first view (start 0) is taken. Kinetics-style
    validation is ``val_window``. TSN-style (SSv2) testing, as the reference's ``load_frame``
    in test mode: ``tick = length / num_frames``; view ``s`` takes frame ``int(s * tick /
    segments + tick * x)`` of part ``x``, offsets 0 and 0.5 of a part for the paper's 2 views
    (the reference reads the views' indices sorted and view ``s`` as every ``segments``-th
    frame from ``s``, which is the same frames). TSN validation is ``val_segments``.
    """
    if tsn and validation:
        return [val_segments(length, num_frames)]
    if tsn:
        tick = length / num_frames
        # Below ``length`` without clamping: s / segments + x < num_frames.
        return [
            [int(s * tick / segments + tick * x) for x in range(num_frames)]
            for s in range(segments)
        ]
    if validation:
        return [val_window(length, num_frames, stride)]
    buffer = list(range(0, length, stride))
    buffer += buffer[-1:] * (num_frames - len(buffer))
    step = max((len(buffer) - num_frames) / (segments - 1), 0) if segments > 1 else 0.0
    starts = [int(s * step) for s in range(segments)]
    return [buffer[b : b + num_frames] for b in starts]


# --- datasets ----------------------------------------------------------------------------


@contextlib.contextmanager
def _local_file(path: str, store: ClipStore | None, sha256: str = "") -> Iterator[Path]:
    """A local path for a plain path or a clip-store URI (``file://`` works without a store),
    verified against ``sha256`` by the store when given (once per process for a local store)."""
    if "://" not in path:
        yield Path(path)
    elif store is not None:
        key = store.key_from_uri(path)
        ref = ObjectRef(key, path, sha256, -1) if sha256 else key
        with store.open_local(ref) as local:
            yield local
    elif path.startswith("file://"):
        yield Path(path.removeprefix("file://"))
    else:
        raise ObjectNotFound(f"{path}: a store URI but no store configured")


@dataclass(frozen=True, slots=True)
class FrameFolders:
    """How the files of a frame folder are named: the reference's ``filename_tmpl`` and the
    number of the first frame where a list line gives none (``dir total label``)."""

    template: str = "img_{:05d}.jpg"
    start: int = 1
    """TSN / mmaction frame folders number their files from ``img_00001.jpg``."""


FrameReader = Callable[[Sequence[int]], np.ndarray]


def _read_frame_files(
    entry: VideoEntry, store: ClipStore | None, folders: FrameFolders, indices: Sequence[int]
) -> np.ndarray:
    """uint8 RGB ``(T, H, W, 3)`` from a frame folder; indices clamped as ``read_frames``."""
    first = folders.start if entry.start is None else entry.start
    images = []
    for index in indices:
        name = folders.template.format(first + min(max(int(index), 0), entry.frames - 1))
        with _local_file(f"{entry.path.rstrip('/')}/{name}", store) as path:
            try:
                with Image.open(path) as image:
                    images.append(np.asarray(image.convert("RGB")))
            except OSError as error:
                raise UnreadableVideo(f"{entry.path}: frame {name}: {error}") from error
    return np.stack(images)


@contextlib.contextmanager
def _opened(
    entry: VideoEntry, store: ClipStore | None, folders: FrameFolders
) -> Iterator[tuple[int, FrameReader]]:
    """The frame count of a video file or frame folder, and a reader of frames by index."""
    if entry.frames >= 0:
        if entry.frames == 0:
            raise UnreadableVideo(f"{entry.path}: a frame folder of 0 frames")
        yield entry.frames, partial(_read_frame_files, entry, store, folders)
        return
    with (
        _local_file(entry.path, store, entry.sha256) as path,
        _video(path, entry.video_frames, entry.path) as opened,
    ):
        yield opened


@contextlib.contextmanager
def _video(
    source: Path | bytes, expected_frames: int, name: str
) -> Iterator[tuple[int, FrameReader]]:
    """A video file or a shard member's bytes, decoded on this thread; a frame count that
    differs from the clip record's means the file is not the clip the record describes."""
    with VideoReader(source, threads=False, name=name) as video:
        frames = video.timeline.frame_count
        if expected_frames >= 0 and frames != expected_frames:
            raise IntegrityError(
                f"{name}: {frames} frames, its clip record says {expected_frames}",
                frames=frames,
                expected=expected_frames,
            )
        yield frames, video.rgb


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch, random and numpy for one item, restoring their state afterwards.

    Augmentations and masks of item ``i`` in epoch ``e`` then depend only on (seed, e, i): a
    resumed run and a run with a different worker count draw the same ones.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


class VideoDataset(Dataset):
    """Training clips: ``num_sample`` augmented clips per decoded video.

    An item is ``(clips (S, C, T, H, W), labels (S,), masks or None, index)``, or a
    ``Rejection`` when the video cannot be read; with ``deferred`` the clips are ``Frames``
    (the decoded frames and the draws of ``deferred``, applied later on the accelerator).
    ``masks(generator)`` (pre-training) returns the encoder and decoder masks of one clip from
    an explicitly seeded generator. Frames come from a random window at ``sampling_rate`` (at
    ``strides[marker]`` for a video whose path holds ``marker``, case-insensitively: a hybrid
    list's Something-Something clips at 2), sampled as the reference's pre-training
    (``pretrain_window``) with ``pretrain``, else as its fine-tuning (``train_window``), or
    with ``tsn`` one from each of ``num_frames`` segments.
    """

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        transform: Callable[[np.ndarray], torch.Tensor],
        num_frames: int,
        sampling_rate: int,
        num_sample: int = 1,
        masks: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
        store: ClipStore | None = None,
        seed: int = 0,
        tsn: bool = False,
        strides: Mapping[str, int] = _NO_STRIDES,
        folders: FrameFolders = FrameFolders(),
        deferred: PretrainAugment | None = None,
        pretrain: bool = False,
    ) -> None:
        self.entries = list(entries)
        self.transform = transform
        self.num_frames = num_frames
        self.sampling_rate = sampling_rate
        self.num_sample = num_sample
        self.masks = masks
        self.store = store
        self.seed = seed
        self.tsn = tsn
        self.strides = {marker.lower(): stride for marker, stride in strides.items()}
        self.folders = folders
        self.deferred = deferred
        self.pretrain = pretrain

    def stride_of(self, path: str) -> int:
        lowered = path.lower()
        found = (stride for marker, stride in self.strides.items() if marker in lowered)
        return next(found, self.sampling_rate)

    def frame_indices(self, path: str, length: int, rng: random.Random) -> list[int]:
        if self.tsn:
            return train_segments(length, self.num_frames, rng)
        window = pretrain_window if self.pretrain else train_window
        return window(length, self.num_frames, self.stride_of(path), rng)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        """``key`` is ``(epoch, index)`` from ``ResumableSampler``: workers need no epoch state."""
        epoch, index = key
        entry = self.entries[index]
        return self.item(
            entry.path,
            entry.label,
            partial(_opened, entry, self.store, self.folders),
            _item_seed(self.seed, epoch, index),
            index,
        )

    def item(
        self,
        path: str,
        label: int,
        opened: Callable[[], contextlib.AbstractContextManager[tuple[int, FrameReader]]],
        seed: int,
        index: int,
    ) -> Any:
        """The training item of one video, from ``opened()`` (its frame count and reader):
        the frames of one window, decoded once, and ``num_sample`` augmentations of them."""
        try:
            with opened() as (length, read):
                frames = read(self.frame_indices(path, length, random.Random(seed)))
        except H2AError as error:
            return _rejection(path, error)
        clips, draws, masks = [], [], []
        with _seeded(seed):
            generator = torch.Generator().manual_seed(seed)
            for _ in range(self.num_sample):
                if self.deferred is not None:
                    draws.append(self.deferred.draw(*frames.shape[1:3]))
                else:
                    clips.append(self.transform(frames))
                if self.masks is not None:
                    masks.append(torch.stack(self.masks(generator)))
        labels = torch.full((self.num_sample,), label, dtype=torch.long)
        samples = Frames([torch.from_numpy(frames)], [torch.stack(draws)]) if draws else None
        return (
            samples or torch.stack(clips),
            labels,
            torch.stack(masks) if masks else None,
            index,
        )


class ShardVideoDataset(torch.utils.data.IterableDataset):
    """Training items streamed from WebDataset shards (``services.common.shards``): the same
    items as ``VideoDataset`` from each member's mp4 bytes, in the stream's order.

    An item's seed comes from the epoch and the member's key, so its window, augmentations and
    masks do not depend on where the stream put it, nor on a resume.
    """

    def __init__(self, stream: ShardStream, videos: VideoDataset) -> None:
        super().__init__()
        self.stream = stream
        self.videos = videos
        stream.transform = self._item

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch ``epoch`` from its ``start``-th item on (a whole number of batches), as
        ``ResumableSampler.set_epoch``."""
        self.stream.set_epoch(epoch, start // self.stream.batch_size)

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.stream)

    def _item(self, record: dict[str, Any], mp4: bytes) -> Any:
        key = record["clip"]["key"]
        member = zlib.crc32(key.encode())
        media = record.get("media") or {}
        return self.videos.item(
            record["clip"]["uri"],
            int(record.get("label", 0)),
            partial(_video, mp4, int(media.get("frames", -1)), key),
            _item_seed(self.videos.seed, self.stream.epoch, member),
            member,
        )


class MultiViewDataset(Dataset):
    """Multi-view testing: all ``segments x crops`` views of one video per item.

    An item is ``(views (V, C, T, H, W), label, index)`` or a ``Rejection``. ``validation``
    takes the one validation view instead of the test views (``view_windows``).
    """

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        views: Callable[[np.ndarray], list[torch.Tensor]],
        num_frames: int,
        sampling_rate: int,
        segments: int,
        tsn: bool = False,
        store: ClipStore | None = None,
        folders: FrameFolders = FrameFolders(),
        validation: bool = False,
    ) -> None:
        self.entries = list(entries)
        self.views = views
        self.num_frames = num_frames
        self.sampling_rate = sampling_rate
        self.segments = segments
        self.tsn = tsn
        self.validation = validation
        self.store = store
        self.folders = folders

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Any:
        entry = self.entries[index]
        try:
            with _opened(entry, self.store, self.folders) as (length, read):
                windows = view_windows(
                    length,
                    self.num_frames,
                    self.sampling_rate,
                    self.segments,
                    self.tsn,
                    self.validation,
                )
                views = [v for w in windows for v in self.views(read(w))]
        except H2AError as error:
            return _rejection(entry.path, error)
        return torch.stack(views), entry.label, index


def _rejection(path: str, error: H2AError) -> Rejection:
    _logger.warning("skipping unreadable video %s: %s", path, error)
    return Rejection(source=path, stage="train-data", reason=error.reason, detail=error.detail)


@dataclass(slots=True)
class Batch:
    """Collated good items plus the rejections of the bad ones."""

    items: tuple[Any, ...] | None
    rejections: list[Rejection]

    def pin_memory(self) -> Batch:
        """The loader's ``pin_memory``: page-locked tensors copy to the GPU asynchronously."""
        if self.items is None:
            return self
        pinned = tuple(item.pin_memory() if item is not None else None for item in self.items)
        return Batch(pinned, self.rejections)


def collate(items: list[Any]) -> Batch:
    """Stack good items (flattening repeated samples), keep rejections apart."""
    good = [item for item in items if not isinstance(item, Rejection)]
    rejected = [item for item in items if isinstance(item, Rejection)]
    if not good:
        return Batch(None, rejected)
    if len(good[0]) == 4:  # training: (clips or Frames, labels, masks, index)
        if isinstance(good[0][0], Frames):
            clips: Any = Frames(
                [v for g in good for v in g[0].videos], [p for g in good for p in g[0].params]
            )
        else:
            clips = torch.cat([g[0] for g in good])
        labels = torch.cat([g[1] for g in good])
        masks = torch.cat([g[2] for g in good]) if good[0][2] is not None else None
        index = torch.tensor([g[3] for g in good])
        return Batch((clips, labels, masks, index), rejected)
    views = torch.stack([g[0] for g in good])
    labels = torch.tensor([g[1] for g in good])
    index = torch.tensor([g[2] for g in good])
    return Batch((views, labels, index), rejected)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Epoch-seeded shuffle, sharded over ranks, that can start part-way through an epoch.

    The order of epoch ``e`` depends only on (seed, e) and the world size, so a resumed run
    skips the ``start`` batches it already trained on and continues the same order.
    """

    def __init__(self, size: int, rank: int, world: int, seed: int, shuffle: bool = True) -> None:
        self.inner = DistributedSampler(
            range(size), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.start = 0
        self.epoch = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, index) for index in list(self.inner)[self.start :]])

    def __len__(self) -> int:
        return len(self.inner) - self.start


def build_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    sampler: Sampler | None = None,
    prefetch_factor: int = 2,
    drop_last: bool = True,
) -> DataLoader:
    """A loader that keeps the accelerator fed: workers, pinned memory, prefetching."""
    workers = dict(persistent_workers=True, prefetch_factor=prefetch_factor) if num_workers else {}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        collate_fn=collate,
        **workers,
    )
