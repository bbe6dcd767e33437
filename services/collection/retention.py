"""Data retention and provenance: delete a source everywhere, by id or by age (ethics, section 8).

The paper deleted all data after training. A source (``source_id`` = sha256 of its raw video)
leaves traces in several places, all removed by ``purge_source``:

* objects: ``raw/{source_id}.*``, ``meta/{source_id}.json``, ``clips/{source_id}/...``;
* dataset manifests, in every ``manifests/{dataset}/``: ``pretrain.csv`` and ``train.csv`` lines
  whose clip URI is one of its clips, ``clips.jsonl`` records, ``review.jsonl`` and
  ``rejections.jsonl`` lines with its ``source_id`` (or, for failures before a source id existed,
  its location);
* collection state: ``state/collect/**.jsonl`` lines naming its location.

Manifests are rewritten first, whole and atomically (``ClipStore.put_lines``), then the objects
are deleted, so a purge stopped half-way never leaves a manifest line pointing at a deleted clip.
``labels.json`` (hashtag -> label) holds no per-source data and is kept, as is ``report.md``, an
aggregate the next curate run rewrites.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from services.common.errors import InvalidKey
from services.common.records import ClipRecord
from services.common.store import ClipStore

__all__ = [
    "PurgeReport",
    "dataset_names",
    "provenance",
    "purge_older_than",
    "purge_source",
    "source_times",
]

_logger = logging.getLogger(__name__)

_CLIP_LISTS = ("pretrain.csv", "train.csv")
_REJECTION_LISTS = ("review.jsonl", "rejections.jsonl")


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge removed: deleted object keys and the lines dropped per manifest key."""

    source_id: str
    deleted: tuple[str, ...] = ()
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.deleted and not self.lines


def dataset_names(store: ClipStore) -> list[str]:
    """Every dataset with manifests in the store."""
    return sorted({key.split("/")[1] for key in store.list("manifests/") if key.count("/") >= 2})


def _meta(store: ClipStore, source_id: str) -> dict[str, Any]:
    key = ClipStore.meta_key(source_id)
    return store.get_json(key) if store.exists(key) else {}


def _locations(meta: dict[str, Any]) -> set[str]:
    metadata = meta.get("metadata") or {}
    found = {meta.get("location"), metadata.get("page_url")}
    return {value for value in found if isinstance(value, str) and value}


def _rewrite(store: ClipStore, key: str, drop: Callable[[str], bool]) -> int:
    """Rewrite ``key`` without the lines ``drop`` selects; the number dropped."""
    lines = store.get_lines(key)
    kept = [line for line in lines if not drop(line)]
    if len(kept) != len(lines):
        store.put_lines(key, kept)
    return len(lines) - len(kept)


def purge_source(store: ClipStore, source_id: str) -> PurgeReport:
    """Delete one source everywhere in the store.

    Args:
        store: the clip store.
        source_id: sha256 of the raw video (the ``source_id`` of its records).

    Returns:
        What was removed; empty when the store held nothing of that source.
    """
    meta_key = ClipStore.meta_key(source_id)  # validates the id as a key part
    clip_prefix = f"clips/{source_id}/"
    locations = _locations(_meta(store, source_id))

    def clip_line(line: str) -> bool:
        try:
            return store.key_from_uri(line.split(" ", 1)[0]).startswith(clip_prefix)
        except InvalidKey:
            return False  # a clip of another store: not ours to judge

    def record_line(line: str) -> bool:
        return json.loads(line).get("source_id") == source_id

    def rejection_line(line: str) -> bool:
        rejection = json.loads(line)  # Rejection fields, read loosely: newer lines may add some
        return rejection.get("source_id") == source_id or (
            not rejection.get("source_id") and rejection.get("source") in locations
        )

    def state_line(line: str) -> bool:
        item = json.loads(line)
        return bool(locations & {item.get("url"), item.get("page_url")})

    dropped: dict[str, int] = {}
    for dataset in dataset_names(store):
        rules = [(name, clip_line) for name in _CLIP_LISTS]
        rules += [("clips.jsonl", record_line)]
        rules += [(name, rejection_line) for name in _REJECTION_LISTS]
        for name, drop in rules:
            key = ClipStore.manifest_key(dataset, name)
            if count := _rewrite(store, key, drop):
                dropped[key] = count
    if locations:
        for key in store.list("state/collect/"):
            if key.endswith(".jsonl") and (count := _rewrite(store, key, state_line)):
                dropped[key] = count
    # Listing is by prefix: keep only this id's raw object, never another id it prefixes.
    raw = [key for key in store.list(f"raw/{source_id}") if PurePosixPath(key).stem == source_id]
    objects = [*store.list(clip_prefix), meta_key, *raw]
    deleted = []
    for key in objects:
        if store.exists(key):
            store.delete(key)
            deleted.append(key)
    report = PurgeReport(source_id, tuple(deleted), dropped)
    _logger.info(
        "purged source: %d objects, %d manifest lines",
        len(deleted), sum(dropped.values()),
        extra={"source_id": source_id, "stage": "retention"},
    )  # fmt: skip
    return report


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str | int | float) or text == "":
        return None
    try:
        if isinstance(text, int | float):
            return datetime.fromtimestamp(text, UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def source_times(store: ClipStore) -> dict[str, datetime | None]:
    """When each known source entered the store: the earliest timestamp any record gives.

    Sources: ``meta/`` objects, ``clips/`` folders and records of every dataset. Times come from
    the metadata (``created_at``, or the collection's ``collected_at``) and from the clip,
    review and rejection records' ``created_at``. None when nothing dates a source.
    """
    times: dict[str, list[datetime]] = {}

    def note(source_id: str, moment: Any) -> None:
        if source_id:
            times.setdefault(source_id, [])
            if (parsed := _parse_time(moment)) is not None:
                times[source_id].append(parsed)

    for key in store.list("meta/"):
        source_id = key.removeprefix("meta/").removesuffix(".json")
        meta = store.get_json(key)
        note(source_id, meta.get("created_at") or (meta.get("metadata") or {}).get("collected_at"))
    for key in store.list("clips/"):
        note(key.split("/")[1], None)
    for dataset in dataset_names(store):
        for line in store.get_lines(ClipStore.manifest_key(dataset, "clips.jsonl")):
            record = json.loads(line)
            note(record.get("source_id", ""), record.get("created_at"))
        for name in _REJECTION_LISTS:
            for line in store.get_lines(ClipStore.manifest_key(dataset, name)):
                rejection = json.loads(line)
                note(rejection.get("source_id", ""), rejection.get("created_at"))
    return {source_id: min(found) if found else None for source_id, found in times.items()}


def purge_older_than(
    store: ClipStore, days: float, now: datetime | None = None
) -> list[PurgeReport]:
    """Purge every source that entered the store more than ``days`` ago.

    Args:
        store: the clip store.
        days: age limit; 0 purges every dated source.
        now: the reference time (default: now, UTC).

    Returns:
        One report per purged source. Sources no record dates are kept (and logged): purge them
        by id.
    """
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    reports = []
    for source_id, moment in sorted(source_times(store).items()):
        if moment is None:
            _logger.warning("source has no timestamp; kept", extra={"source_id": source_id})
        elif moment < cutoff:
            reports.append(purge_source(store, source_id))
    return reports


def provenance(
    store: ClipStore, source_id: str | None = None, clip_key: str | None = None
) -> list[tuple[str, ClipRecord]]:
    """Clip records of one source or one clip, with the dataset each belongs to.

    Args:
        store: the clip store.
        source_id: select the clips of this source.
        clip_key: select this clip (a key ``clips/...`` or its URI).

    Returns:
        ``(dataset, record)`` pairs in manifest order.
    """
    if clip_key is not None and "://" in clip_key:
        clip_key = store.key_from_uri(clip_key)
    found = []
    for dataset in dataset_names(store):
        for line in store.get_lines(ClipStore.manifest_key(dataset, "clips.jsonl")):
            record = ClipRecord.from_json(line)
            if (source_id is None or record.source_id == source_id) and (
                clip_key is None or record.clip.key == clip_key
            ):
                found.append((dataset, record))
    return found
