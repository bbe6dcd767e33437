"""Data retention and provenance: delete a source everywhere, by id or by age (ethics, section 8).

The paper deleted all data after training. A source (``source_id`` = sha256 of its raw video)
leaves traces in several places, all removed by ``purge_source``:

* its records in every dataset: clips, review and rejection entries and failed attempts with its
  ``source_id`` (or, for failures before a source id existed, its location), purged through the
  dataset owner (``Dataset.purge``: the parts holding them are compacted away, not hidden), then
  the dataset's lists and report are published again;
* collection state: ``state/collect/**.jsonl`` lines naming its location;
* its objects (``ClipStore.source_objects``): clips, metadata, raw video.

Records go first, then the objects, so a purge stopped half-way never leaves a record pointing at
a deleted clip, and the next purge of the same id finishes the job. Labels (hashtag -> index)
hold no per-source data and are kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.common.dataset import Dataset
from services.common.records import ClipRecord, Outcome
from services.common.store import ClipStore

__all__ = [
    "PurgeReport",
    "provenance",
    "purge_older_than",
    "purge_source",
    "source_times",
]

_logger = logging.getLogger(__name__)

_COLLECT_STATE = "collect"


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge removed: deleted object keys, the records (inputs) removed per dataset and
    the lines dropped per collection-state object."""

    source_id: str
    deleted: tuple[str, ...] = ()
    records: dict[str, int] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.deleted and not self.records and not self.lines


def _meta(store: ClipStore, source_id: str) -> dict[str, Any]:
    key = ClipStore.meta_key(source_id)
    return store.get_json(key) if store.exists(key) else {}


def _locations(meta: dict[str, Any]) -> set[str]:
    metadata = meta.get("metadata") or {}
    found = {meta.get("location"), metadata.get("page_url")}
    return {value for value in found if isinstance(value, str) and value}


def _rewrite_state(store: ClipStore, key: str, locations: set[str]) -> int:
    """Rewrite a collection-state list without the lines naming ``locations``."""
    lines = store.get_lines(key)
    items = [json.loads(line) for line in lines]
    kept = [
        line
        for line, item in zip(lines, items, strict=True)
        if not locations & {item.get("url"), item.get("page_url")}
    ]
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
    from services.curation.curate import publish_dataset

    ClipStore.meta_key(source_id)  # validates the id as a key part
    locations = _locations(_meta(store, source_id))

    def selected(outcome: Outcome) -> bool:
        own = getattr(outcome, "source_id", "")
        return own == source_id or (not own and outcome.source in locations)

    records: dict[str, int] = {}
    for name in Dataset.names(store):
        if removed := Dataset(store, name).purge(selected):
            records[name] = len(removed)
            publish_dataset(store, name)
    dropped: dict[str, int] = {}
    if locations:
        for key in store.list(store.state_prefix(_COLLECT_STATE)):
            if key.endswith(".jsonl") and (count := _rewrite_state(store, key, locations)):
                dropped[key] = count
    deleted = []
    for key in store.source_objects(source_id):
        store.delete(key)
        deleted.append(key)
    report = PurgeReport(source_id, tuple(deleted), records, dropped)
    _logger.info(
        "purged source: %d objects, %d records, %d state lines",
        len(deleted), sum(records.values()), sum(dropped.values()),
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

    Sources: ``meta/`` objects, ``clips/`` folders and the records of every dataset. Times come
    from the metadata (``created_at``, or the collection's ``collected_at``) and from the clip,
    review and rejection records' ``created_at``. None when nothing dates a source.
    """
    times: dict[str, list[datetime]] = {}

    def note(source_id: str, moment: Any) -> None:
        if source_id:
            times.setdefault(source_id, [])
            if (parsed := _parse_time(moment)) is not None:
                times[source_id].append(parsed)

    for source_id in store.meta_source_ids():
        meta = store.get_json(ClipStore.meta_key(source_id))
        note(source_id, meta.get("created_at") or (meta.get("metadata") or {}).get("collected_at"))
    for source_id in store.clip_source_ids():
        note(source_id, None)
    for name in Dataset.names(store):
        snapshot = Dataset(store, name).snapshot()
        for record in (*snapshot.all_clips(), *snapshot.review, *snapshot.rejections):
            note(record.source_id, record.created_at)
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
        ``(dataset, record)`` pairs, datasets by name, records in commit order.
    """
    if clip_key is not None and "://" in clip_key:
        clip_key = store.key_from_uri(clip_key)
    found = []
    for name in Dataset.names(store):
        for record in Dataset(store, name).snapshot().all_clips():
            if (source_id is None or record.source_id == source_id) and (
                clip_key is None or record.clip.key == clip_key
            ):
                found.append((name, record))
    return found
