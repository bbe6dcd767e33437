"""The curated dataset: the one owner of its records, its lists and its consistency.

A dataset is a set of immutable *parts* in the store (``ClipStore.part_key``), each a JSON-lines
object written whole by one commit. A commit is one atomic put of a new, uniquely named part, so
any number of concurrent writers (processes, pipeline shards, machines on one S3 bucket) lose
nothing and never overwrite each other, and adding N records costs O(N) whatever the dataset's
size. There is no pointer to update: a part that is visible is committed.

Every line carries a version ``{part}:{line}``; part names start with the commit time in
nanoseconds, so versions order commits. Reading folds all parts:

* each *input* (a source location) has one current outcome, its records in the newest commit
  that has any: clip(s), a review entry (too few person frames) or a rejection — unless a purge
  tombstone (which names the input by hash only) is newer;
* failed attempts (retryable failures) never replace an outcome; they are counted per input
  since its last outcome, and an input with attempts but no outcome is *pending*;
* labels: hashtag -> index in the order hashtags first appeared; they survive purges, so a
  trained head's classes never move.

Compaction folds parts into one (keeping each record's original version), then deletes the
parts it covered. A reader that meets a part deleted under it lists again. A crash between the
write and the deletes leaves duplicates of equal version, which the fold drops. Purging is a
compaction that leaves the purged inputs out and writes tombstones for them, so the records are
gone from the store, not only hidden.

Two screens run on every fold, so they depend on the set of records only, never on the order
runs committed them in, and a purge undoes what they did:

* near-duplicates: among clips whose record carries a perceptual signature
  (``services.common.signatures``), clips within ``MATCH_DISTANCE`` of a better one become a
  ``Duplicate`` naming the kept clip. Better means, in this order: more views
  (``metadata["view_count"]``), earlier ``created_at``, smaller ``source_id``, smaller clip key.
  Purging the kept clip's source brings its duplicates back;
* benchmark contamination: a ``contamination`` line per benchmark (the newest one wins) lists the
  clips that match one of its videos (``h2a dataset contamination``); those clips are left out
  as ``Contaminated``, after the duplicates were decided, so a flagged clip's duplicates stay out
  too.

The lists the trainer and external VideoMAE code read (``pretrain.csv``, ``train.csv``,
``labels.json``, ``clips.jsonl``, ``review.jsonl``, ``rejections.jsonl``, ``duplicates.jsonl``,
``contamination.jsonl``, ``dataset.json``) are *views*: derived from a snapshot by ``publish``,
rebuilt until they match the parts that exist when the publisher finishes, so concurrent
publishers converge on the newest state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from services.common.errors import ConfigError, IntegrityError, ObjectNotFound
from services.common.records import (
    ClipRecord,
    FailedAttempt,
    Outcome,
    Rejection,
    utc_now,
)
from services.common.signatures import MATCH_DISTANCE, Signature, SignatureIndex
from services.common.store import ClipStore

__all__ = [
    "COMPACT_AFTER_PARTS",
    "LIST_FOLDER",
    "REVIEW_REASON",
    "VIEW_NAMES",
    "CompactionResult",
    "Contaminated",
    "Dataset",
    "Duplicate",
    "Snapshot",
    "iter_outcomes",
    "training_lists",
]

_logger = logging.getLogger(__name__)

REVIEW_REASON = "TOO_FEW_PERSON_FRAMES"
"""A rejection with this reason is a review entry: the video may hold an action nobody saw."""

VIEW_NAMES = (
    "labels.json",
    "pretrain.csv",
    "train.csv",
    "clips.jsonl",
    "review.jsonl",
    "rejections.jsonl",
    "duplicates.jsonl",
    "contamination.jsonl",
    "dataset.json",
)
"""The published views, written in this order: labels first, so a reader of a list always finds
its labels; ``dataset.json`` (version and counts) last, naming the snapshot the views show."""

LIST_FOLDER = {
    "pretrain": ("pretrain.csv", "train.csv"),
    "train": ("train.csv",),
    "val": ("val.csv",),
    "test": ("test.csv",),
    "labels": ("labels.json", "classInd.txt"),
}
"""File names of a folder of VideoMAE lists (a published dataset, or a benchmark's lists),
first match wins; ``pretrain`` is the training list of pre-training runs."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
_KINDS = ("clip", "review", "rejection", "attempt", "purged", "label", "contamination")
# Lines that are not an input's outcome: compaction keeps them, purges never select them.
_BOOKKEEPING = ("label", "purged", "contamination")
_READ_TRIES = 5
# Sorts before every timed part: the lists of a dataset from before parts existed.
_LEGACY_PART = f"{0:020d}-legacy000000"
_PUBLISH_ROUNDS = 5
COMPACT_AFTER_PARTS = 64
"""``publish`` compacts a dataset holding more parts than this, so reads stay a few objects."""


def _kind(result: Outcome) -> str:
    if isinstance(result, ClipRecord):
        return "clip"
    if isinstance(result, FailedAttempt):
        return "attempt"
    return "review" if result.reason == REVIEW_REASON else "rejection"


@dataclass(frozen=True, slots=True)
class _Line:
    """One record of a part: ``key`` is the input (source location), or the hashtag of a
    label line."""

    version: str
    kind: str
    key: str
    record: dict[str, Any]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"v": self.version, "kind": self.kind, "key": self.key, "record": self.record},
            option=orjson.OPT_SORT_KEYS,
            default=str,
        )

    @classmethod
    def parse(cls, text: bytes, where: str) -> _Line:
        try:
            data = orjson.loads(text)
            line = cls(str(data["v"]), str(data["kind"]), str(data["key"]), dict(data["record"]))
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise IntegrityError(f"{where}: not a dataset record ({error})") from None
        if line.kind not in _KINDS:
            raise IntegrityError(f"{where}: unknown record kind {line.kind!r}")
        return line

    def outcome(self) -> Outcome:
        if self.kind == "clip":
            return ClipRecord.from_dict(self.record)
        if self.kind == "attempt":
            return FailedAttempt(**self.record)
        return Rejection(**self.record)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A clip left out as a near-duplicate of the clip ``kept`` (a clip key)."""

    clip: ClipRecord
    kept: str
    distance: float

    def to_json(self) -> str:
        return json.dumps(
            {"outcome": "DUPLICATE", "kept": self.kept, "distance": self.distance}
            | asdict(self.clip),
            sort_keys=True,
            default=str,
        )


@dataclass(frozen=True, slots=True)
class Contaminated:
    """A clip left out because it matches ``video`` of the evaluation set ``benchmark``."""

    clip: ClipRecord
    benchmark: str
    video: str
    distance: float

    def to_json(self) -> str:
        fields = {"benchmark": self.benchmark, "video": self.video, "distance": self.distance}
        return json.dumps(
            {"outcome": "CONTAMINATED", **fields} | asdict(self.clip), sort_keys=True, default=str
        )


@dataclass(frozen=True)
class Snapshot:
    """One consistent state of a dataset: the fold of the parts listed at one moment.

    Near-duplicates and contaminated clips are split off when ``clips``, ``duplicates`` or
    ``contaminated`` is first read: readers that need only the outcomes (a curate run's skip
    list, its attempts) do not pay the signature lookups.
    """

    dataset: str
    version: str
    """Names the set of parts folded (sha256 prefix of their names)."""
    parts: tuple[str, ...]
    records: tuple[ClipRecord, ...]
    """One record per clip object, in commit order, duplicates and contaminated ones included."""
    review: tuple[Rejection, ...]
    rejections: tuple[Rejection, ...]
    pending: tuple[FailedAttempt, ...]
    """Inputs whose last try failed on a retryable error and that have no outcome yet."""
    attempts: dict[str, int]
    """Failed attempts per input since its last outcome."""
    labels: dict[str, int]
    screens: tuple[_Line, ...] = field(default=(), repr=False)
    """The newest contamination check line per benchmark."""
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The newest contamination check per benchmark: ``location``, ``videos``, ``created_at``."""
    lines: tuple[_Line, ...] = field(default=(), repr=False)
    """The winning lines (outcomes, tombstones, later attempts, labels): what compaction keeps."""

    def all_clips(self) -> tuple[ClipRecord, ...]:
        """Every current clip record: the dataset's clips, duplicates and contaminated ones."""
        return self.records

    @cached_property
    def _split(
        self,
    ) -> tuple[tuple[ClipRecord, ...], tuple[Duplicate, ...], tuple[Contaminated, ...]]:
        kept, duplicates = _deduplicate(list(self.records))
        kept, contaminated = _screen(kept, self.screens)
        return tuple(kept), tuple(duplicates), tuple(contaminated)

    @property
    def clips(self) -> tuple[ClipRecord, ...]:
        """The dataset's clips, in commit order: without duplicates and contaminated clips."""
        return self._split[0]

    @property
    def duplicates(self) -> tuple[Duplicate, ...]:
        """Clips left out as near-duplicates of a kept clip, in commit order."""
        return self._split[1]

    @property
    def contaminated(self) -> tuple[Contaminated, ...]:
        """Clips left out because they match a benchmark's evaluation video."""
        return self._split[2]

    @property
    def inputs(self) -> int:
        """Inputs with a current outcome (clip, review or rejection)."""
        return sum(line.kind in ("clip", "review", "rejection") for line in self.lines)

    def pretrain_lines(self) -> list[str]:
        """VideoMAE pre-training list: ``uri 0 -1`` per clip (unlabelled)."""
        return [f"{clip.clip.uri} 0 -1" for clip in self.clips]

    def train_lines(self) -> list[str]:
        """VideoMAE list with the hashtag as weak label: ``uri label`` per clip."""
        return [f"{clip.clip.uri} {self.labels[clip.hashtag]}" for clip in self.clips]

    def counts(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "parts": len(self.parts),
            "clips": len(self.clips),
            "review": len(self.review),
            "rejections": len(self.rejections),
            "duplicates": len(self.duplicates),
            "contaminated": len(self.contaminated),
            "pending": len(self.pending),
            "hashtags": len(self.labels),
        }

    def views(self) -> dict[str, str]:
        """The text of each published view, by name (``VIEW_NAMES`` order)."""

        def jsonl(records: Iterable[ClipRecord | Rejection | Duplicate | Contaminated]) -> str:
            return "".join(f"{record.to_json()}\n" for record in records)

        def text(lines: list[str]) -> str:
            return "".join(f"{line}\n" for line in lines)

        return {
            "labels.json": json.dumps(self.labels, indent=2, sort_keys=True) + "\n",
            "pretrain.csv": text(self.pretrain_lines()),
            "train.csv": text(self.train_lines()),
            "clips.jsonl": jsonl(self.clips),
            "review.jsonl": jsonl(self.review),
            "rejections.jsonl": jsonl(self.rejections),
            "duplicates.jsonl": jsonl(self.duplicates),
            "contamination.jsonl": jsonl(self.contaminated),
            "dataset.json": json.dumps(self.counts(), indent=2, sort_keys=True) + "\n",
        }


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What a compaction did: the part written, the parts it replaced, the inputs removed."""

    part: str | None
    replaced: tuple[str, ...]
    removed: tuple[str, ...] = ()


def _tombstone_key(key: str) -> str:
    # Tombstones name an input by hash: a purged source's location is not kept anywhere.
    return hashlib.sha256(key.encode()).hexdigest()


def _commit(version: str) -> str:
    return version.partition(":")[0]


def _fold(dataset: str, parts: list[tuple[str, list[_Line]]]) -> Snapshot:
    lines: dict[str, _Line] = {}  # by version: a compacted copy and its original are one line
    for _, part_lines in parts:
        for line in part_lines:
            lines.setdefault(line.version, line)
    outcome: dict[str, list[_Line]] = {}  # input -> its records of the newest commit
    labels: dict[str, _Line] = {}
    attempts: dict[str, list[_Line]] = {}
    tombstones: dict[str, _Line] = {}
    checks: dict[str, _Line] = {}  # benchmark -> its newest contamination line
    for line in sorted(lines.values(), key=lambda item: item.version):
        if line.kind == "label":
            labels.setdefault(line.key, line)
        elif line.kind == "contamination":
            checks[line.key] = line
        elif line.kind == "attempt":
            attempts.setdefault(line.key, []).append(line)
        elif line.kind == "purged":
            tombstones[line.key] = line
        else:
            group = outcome.get(line.key)
            if (
                group
                and line.kind == group[0].kind == "clip"
                and _commit(group[0].version) == _commit(line.version)
            ):
                group.append(line)  # one commit's clips of one input are one outcome
            else:
                outcome[line.key] = [line]

    def newest(key: str) -> str:
        """Version of the input's current outcome or tombstone ("" when it has neither)."""
        found = outcome[key][-1].version if key in outcome else ""
        if tombstones and (stone := tombstones.get(_tombstone_key(key))):
            found = max(found, stone.version)
        return found

    groups = [group for key, group in outcome.items() if newest(key) == group[-1].version]
    # Attempts older than the input's outcome are history: only the ones since count.
    since = {key: [a for a in tried if a.version > newest(key)] for key, tried in attempts.items()}
    since = {key: tried for key, tried in since.items() if tried}
    winners = sorted((line for group in groups for line in group), key=lambda i: i.version)
    clips: dict[str, ClipRecord] = {}
    review, rejections = [], []
    for line in winners:
        record = line.outcome()
        if isinstance(record, ClipRecord):
            # Two inputs that are the same video share one clip object: list it once.
            clips.setdefault(record.clip.key, record)
        elif line.kind == "review":
            review.append(record)
        else:
            rejections.append(record)
    current = {line.key for line in winners}
    pending = tuple(tried[-1].outcome() for key, tried in since.items() if key not in current)
    labels_sorted = sorted(labels.values(), key=lambda item: (item.version, item.key))
    names = tuple(name for name, _ in parts)
    kept = [
        *labels_sorted,
        *tombstones.values(),
        *checks.values(),
        *winners,
        *(a for tried in since.values() for a in tried),
    ]
    return Snapshot(
        dataset=dataset,
        version=hashlib.sha256("\n".join(names).encode()).hexdigest()[:16],
        parts=names,
        records=tuple(clips.values()),
        screens=tuple(checks.values()),
        checks={
            name: {k: v for k, v in line.record.items() if k != "matches"}
            for name, line in sorted(checks.items())
        },
        review=tuple(review),  # type: ignore[arg-type]
        rejections=tuple(rejections),  # type: ignore[arg-type]
        pending=pending,  # type: ignore[arg-type]
        attempts={key: len(tried) for key, tried in since.items()},
        labels={line.key: index for index, line in enumerate(labels_sorted)},
        lines=tuple(kept),
    )


def _rank(record: ClipRecord) -> tuple[int, str, str, str]:
    """Sort key of the clip a group of near-duplicates keeps: the first."""
    views = record.metadata.get("view_count")
    return (-int(views or 0), record.created_at, record.source_id, record.clip.key)


def _deduplicate(clips: list[ClipRecord]) -> tuple[list[ClipRecord], list[Duplicate]]:
    """Split clips (commit order) into the kept ones and near-duplicates of a kept one.

    Clips are decided best first (``_rank``): a clip within ``MATCH_DISTANCE`` of a clip kept
    before it is a duplicate of the nearest such clip (ties: the better ranked), so the outcome
    is the same in whatever order the records were committed. Clips without a signature, or
    with one that does not parse (logged), are kept.
    """
    signed = {}
    for record in clips:
        if record.media is None or not record.media.signature:
            continue
        try:
            signed[record.clip.key] = Signature.from_hex(record.media.signature)
        except ValueError as error:  # one bad record must not stop every fold
            _logger.warning("clip kept unchecked for duplicates: %s", error,
                            extra={"key": record.clip.key})  # fmt: skip
    if len(signed) < 2:
        return clips, []
    index = SignatureIndex()
    index.add(signed.items())
    by_key = {record.clip.key: record for record in clips}
    rank = {key: _rank(by_key[key]) for key in signed}
    order = sorted(signed, key=rank.__getitem__)
    # Every clip's neighbours in one batched pass; then the decisions, best ranked first.
    neighbours = index.search_many([signed[key] for key in order], MATCH_DISTANCE)
    kept: set[str] = set()
    shadowed: dict[str, tuple[str, float]] = {}
    for key, found in zip(order, neighbours, strict=True):
        matches = [(d, rank[k], k) for k, d in found if k in kept]
        if matches:
            distance, _, best = min(matches)
            shadowed[key] = (best, distance)
        else:
            kept.add(key)
    duplicates = [Duplicate(r, *shadowed[r.clip.key]) for r in clips if r.clip.key in shadowed]
    return [r for r in clips if r.clip.key not in shadowed], duplicates


def _screen(
    clips: list[ClipRecord], checks: Iterable[_Line]
) -> tuple[list[ClipRecord], list[Contaminated]]:
    """Split clips into the clean ones and those a contamination check flagged (the nearest
    benchmark video of the first check, by benchmark name, that flags a clip)."""
    flagged: dict[str, tuple[str, str, float]] = {}
    for check in sorted(checks, key=lambda line: line.key):
        for match in check.record.get("matches", ()):
            flagged.setdefault(match["clip"], (check.key, match["video"], match["distance"]))
    contaminated = [Contaminated(r, *flagged[r.clip.key]) for r in clips if r.clip.key in flagged]
    return [r for r in clips if r.clip.key not in flagged], contaminated


class Dataset:
    """A named dataset in a clip store; see the module docstring for the model.

    Args:
        store: the clip store.
        name: the dataset's name (letters, digits, ``._-``).
    """

    def __init__(self, store: ClipStore, name: str) -> None:
        if not _NAME.match(name):
            raise ConfigError(f"dataset name {name[:64]!r} is not letters, digits and ._-")
        self.store = store
        self.name = name

    @staticmethod
    def names(store: ClipStore) -> list[str]:
        """Every dataset in the store."""
        return store.dataset_names()

    def view_key(self, name: str) -> str:
        """Store key of a published view or report file (``VIEW_NAMES``, ``report.md``, ...)."""
        return ClipStore.manifest_key(self.name, name)

    def view_uri(self, name: str) -> str:
        return self.store.uri(self.view_key(name))

    def folder_uri(self) -> str:
        """The URI of the dataset's folder, ending in ``/``: the trainer's ``--manifest``."""
        return self.store.prefix_uri(self.store.dataset_prefix(self.name))

    # --- writing -------------------------------------------------------------------------
    def add(self, results: Iterable[Outcome]) -> str | None:
        """Commit outcomes as one new part; return its key (None when there was nothing).

        Labels for hashtags of new clips are committed in the same part; the fold keeps the
        first label line of each hashtag, so concurrent commits agree on the numbering.
        """
        results = list(results)
        if not results:
            return None
        part = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        lines = []
        hashtags = sorted({r.hashtag for r in results if isinstance(r, ClipRecord)})
        for hashtag in hashtags:
            lines.append(_Line(f"{part}:{len(lines):08d}", "label", hashtag, {}))
        for result in results:
            version = f"{part}:{len(lines):08d}"
            lines.append(_Line(version, _kind(result), result.source, asdict(result)))
        return self._write_part(part, lines)

    def add_contamination_check(
        self, benchmark: str, location: str, videos: int, matches: Iterable[dict[str, Any]]
    ) -> str:
        """Commit the result of checking the dataset's clips against one benchmark; it replaces
        the benchmark's earlier check, so clips it no longer flags come back.

        Args:
            benchmark: the benchmark's name (``ucf101``).
            location: where its videos were read (list file or folder).
            videos: how many videos were signed.
            matches: ``{"clip": clip key, "video": the benchmark video, "distance": ...}``.

        Returns:
            The part's key.
        """
        part = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        record = {
            "location": location,
            "videos": videos,
            "matches": sorted(matches, key=lambda match: (match["clip"], match["video"])),
            "created_at": utc_now(),
        }
        return self._write_part(
            part, [_Line(f"{part}:{0:08d}", "contamination", benchmark, record)]
        )

    def _write_part(self, part: str, lines: Iterable[_Line]) -> str:
        key = self.store.part_key(self.name, part)
        self.store.put_bytes(key, b"".join(line.to_json() + b"\n" for line in lines))
        return key

    # --- reading -------------------------------------------------------------------------
    def part_names(self) -> list[str]:
        """Names of the committed parts, oldest first."""
        return [Path(key).stem for key in self.store.part_keys(self.name)]

    def _read_part(self, part: str) -> list[_Line]:
        key = self.store.part_key(self.name, part)
        data = self.store.get_bytes(key)
        return [_Line.parse(line, f"{key}:{n}") for n, line in enumerate(data.splitlines(), 1)]

    def snapshot(self) -> Snapshot:
        """Fold the committed parts into the current state.

        A part deleted by a concurrent compaction while it is read makes the read start over
        (bounded); a part that fails verification is moved to the dataset's quarantine, logged
        and left out: the inputs it held get their outcomes again on the next run over them.
        """
        for _ in range(_READ_TRIES):
            names = self.part_names()
            if not names and self._adopt_legacy_lists():
                names = self.part_names()
            try:
                return _fold(self.name, list(self._read_parts(names)))
            except ObjectNotFound:
                continue
        raise ObjectNotFound(f"dataset {self.name}: parts kept moving while read")

    def _adopt_legacy_lists(self) -> bool:
        """Turn a dataset written before parts existed (lists only, never published from
        parts) into its first part, so publishing it does not start from nothing; called
        when the dataset has no parts. True when a part was written.

        The part's name is fixed and its content derived from the lists, so concurrent
        adopters write the same object.
        """
        if self.store.exists(self.view_key("dataset.json")):
            return False
        lists = {
            name: self.store.get_lines(self.view_key(name))
            for name in ("clips.jsonl", "review.jsonl", "rejections.jsonl")
        }
        if not any(lists.values()):
            return False
        labels_key = self.view_key("labels.json")
        labels = self.store.get_json(labels_key) if self.store.exists(labels_key) else {}
        # Old runs could leave a stale rejection beside a source's clip: the clip goes last, so
        # it is the source's outcome.
        records: list[Outcome] = [
            Rejection.from_json(line)
            for name in ("rejections.jsonl", "review.jsonl")
            for line in lists[name]
        ]
        records += [ClipRecord.from_json(line) for line in lists["clips.jsonl"]]
        hashtags = sorted(labels, key=lambda tag: int(labels[tag]))
        hashtags += sorted({r.hashtag for r in records if isinstance(r, ClipRecord)} - set(labels))
        lines = [
            _Line(f"{_LEGACY_PART}:{i:08d}", "label", tag, {}) for i, tag in enumerate(hashtags)
        ]
        for record in records:
            version = f"{_LEGACY_PART}:{len(lines):08d}"
            lines.append(_Line(version, _kind(record), record.source, asdict(record)))
        self._write_part(_LEGACY_PART, lines)
        _logger.info(
            "dataset lists adopted as its first part",
            extra={"dataset": self.name, "records": len(records)},
        )
        return True

    def _read_parts(self, names: list[str]) -> Iterator[tuple[str, list[_Line]]]:
        for part in names:
            try:
                yield part, self._read_part(part)
            except IntegrityError:
                key = self.store.part_key(self.name, part)
                self.store.quarantine(key, self.store.quarantine_key(self.name, f"{part}.jsonl"))
                _logger.warning(
                    "dataset part failed verification and was quarantined",
                    extra={"dataset": self.name, "key": key},
                )

    def exists(self) -> bool:
        return bool(self.part_names())

    # --- views ---------------------------------------------------------------------------
    def publish(
        self, also: Callable[[Snapshot], None] | None = None, snapshot: Snapshot | None = None
    ) -> Snapshot:
        """Write the views of the current state (and whatever ``also`` writes from it, e.g. the
        report), again until the parts did not change meanwhile; return the published snapshot.

        A dataset with more than ``COMPACT_AFTER_PARTS`` parts is compacted first.
        """
        if snapshot is None:
            snapshot = self.snapshot()
            if len(snapshot.parts) > COMPACT_AFTER_PARTS:
                self.compact()
                snapshot = self.snapshot()
        for _ in range(_PUBLISH_ROUNDS):
            for name, text in snapshot.views().items():
                self.store.put_text(self.view_key(name), text)
            if also is not None:
                also(snapshot)
            if tuple(self.part_names()) == snapshot.parts:
                break
            snapshot = self.snapshot()
        else:
            _logger.warning(
                "dataset kept changing while published; the next publish catches up",
                extra={"dataset": self.name, "version": snapshot.version},
            )
        _logger.info("dataset published", extra=snapshot.counts())
        return snapshot

    def published(self) -> dict[str, Any] | None:
        """``dataset.json`` of the last publish, or None when never published."""
        key = self.view_key("dataset.json")
        return self.store.get_json(key) if self.store.exists(key) else None

    def export(self, out: Path) -> Path:
        """Copy the published views, report and plots (not the parts or training shards) to
        ``out/{name}/``."""
        target = Path(out) / self.name
        prefix = self.store.dataset_prefix(self.name)
        internal = (
            self.store.part_prefix(self.name),
            self.store.quarantine_prefix(self.name),
            self.store.shard_prefix(self.name),
        )
        for key in self.store.list(prefix):
            if not key.startswith(internal):
                destination = target / key[len(prefix) :]
                destination.unlink(missing_ok=True)
                self.store.download(key, destination)
        return target

    # --- maintenance ---------------------------------------------------------------------
    def compact(self, remove: Callable[[Outcome], bool] | None = None) -> CompactionResult:
        """Fold every part into one and delete the parts it replaces.

        Args:
            remove: outcomes (and failed attempts) to leave out; each input removed gets a
                tombstone, so copies of its records in parts written concurrently stay hidden.

        Returns:
            The new part, the parts replaced and the inputs removed.
        """
        snapshot = self.snapshot()
        if not snapshot.parts:
            return CompactionResult(None, ())
        part = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        kept: list[_Line] = []
        removed: dict[str, _Line] = {}
        for line in snapshot.lines:
            if line.kind in _BOOKKEEPING or remove is None or not remove(line.outcome()):
                kept.append(line)
            else:
                removed.setdefault(line.key, line)
        for number, key in enumerate(removed):
            stone = _Line(f"{part}:{number:08d}", "purged", _tombstone_key(key), {})
            kept.append(stone)
        written = self._write_part(part, kept)
        for old in snapshot.parts:
            self.store.delete(self.store.part_key(self.name, old))
        _logger.info(
            "dataset compacted",
            extra={"dataset": self.name, "parts": len(snapshot.parts), "removed": len(removed)},
        )
        return CompactionResult(written, snapshot.parts, tuple(removed))

    def purge(self, remove: Callable[[Outcome], bool]) -> tuple[str, ...]:
        """Remove outcomes from the store for good (retention); return the inputs removed.

        Repeats the compaction while a part that escaped it (a concurrent commit) still holds
        a selected record, so nothing selected stays stored.
        """
        removed: list[str] = []
        for _ in range(_PUBLISH_ROUNDS):
            result = self.compact(remove)
            removed += result.removed
            if not self._holds(remove, skip=result.part):
                break
        return tuple(dict.fromkeys(removed))

    def _holds(self, remove: Callable[[Outcome], bool], skip: str | None) -> bool:
        for part in self.part_names():
            if skip and self.store.part_key(self.name, part) == skip:
                continue
            for line in self._read_part(part):
                if line.kind not in _BOOKKEEPING and remove(line.outcome()):
                    return True
        return False


def _folder_names(mode: str) -> dict[str, tuple[str, ...]]:
    names = {split: LIST_FOLDER[split] for split in ("val", "test", "labels")}
    names["train"] = LIST_FOLDER["pretrain" if mode == "pretrain" else "train"]
    names["records"] = ("clips.jsonl",)  # what the loader knows of each clip without opening it
    return names


def training_lists(location: str, mode: str, store: ClipStore) -> dict[str, str]:
    """The lists a training run reads from a folder of lists, by split.

    Args:
        location: a local folder, a store prefix or a store URI ending in ``/`` — a published
            dataset (``manifests/{name}/``) or a benchmark's lists.
        mode: the trainer's mode; ``pretrain`` reads ``pretrain.csv`` before ``train.csv``.
        store: the store that store prefixes and URIs belong to.

    Returns:
        ``{"train": ..., "val": ..., "test": ..., "labels": ..., "records": ...}`` with the
        splits found (``records``: a published dataset's ``clips.jsonl``), as local paths or
        store URIs.

    Raises:
        ConfigError: a dataset with committed parts that was never published.
    """
    folder = location.rstrip("/")
    if Path(folder).is_dir():

        def find(name: str) -> str:
            return str(Path(folder, name)) if Path(folder, name).is_file() else ""

    else:
        prefix = store.key_from_uri(f"{folder}/") if "://" in folder else f"{folder}/"

        def find(name: str) -> str:
            return store.uri(prefix + name) if store.exists(prefix + name) else ""

        dataset = store.dataset_of(prefix)
        if dataset and not find("dataset.json") and Dataset(store, dataset).exists():
            raise ConfigError(
                f"dataset {dataset!r} has records but no published lists: "
                f"run `h2a dataset publish {dataset}`"
            )
    found = {}
    for split, names in _folder_names(mode).items():
        found[split] = next((path for path in map(find, names) if path), "")
    return {split: path for split, path in found.items() if path}


def iter_outcomes(snapshot: Snapshot) -> Iterator[Outcome]:
    """Every current outcome of a snapshot (clips, review, rejections, pending attempts)."""
    yield from snapshot.all_clips()
    yield from snapshot.review
    yield from snapshot.rejections
    yield from snapshot.pending
