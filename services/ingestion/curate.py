"""The order of the stages, written once: ingest -> scenes -> persons -> clip, then manifests.

``curate_one`` runs one source through a ``Stages`` implementation: ``LocalStages`` calls the
stage functions in-process (the embedded default); ``GrpcStages``
(``services/ingestion/grpc_stages.py``) calls the four services. Both take the same path, so an
embedded run and a cluster run write the same manifests. Every ``H2AError`` becomes a
``Rejection`` and the batch goes on; anything else is a bug and fails loudly.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tqdm import tqdm

from services.clips.encode import ClipSettings, choose_segment, encode_clip
from services.common.config import StoreSettings
from services.common.errors import H2AError
from services.common.records import ClipRecord, ObjectRef, Rejection, Segment
from services.common.store import ClipStore
from services.ingestion.report import write_report
from services.ingestion.sources import (
    IngestedVideo,
    IngestSettings,
    SourceItem,
    expand_source,
    ingest,
)
from services.persons.detect import PersonResult, PersonSettings, detect_persons
from services.scenes.detect import SceneResult, SceneSettings, detect_scenes

__all__ = [
    "MANIFEST_NAMES",
    "REVIEW_REASON",
    "CurateSettings",
    "CurateSummary",
    "LocalStages",
    "Stages",
    "build_stages",
    "curate",
    "curate_one",
    "export_dataset",
    "write_manifests",
]

_logger = logging.getLogger(__name__)

REVIEW_REASON = "TOO_FEW_PERSON_FRAMES"
MANIFEST_NAMES = (
    "pretrain.csv",
    "train.csv",
    "labels.json",
    "clips.jsonl",
    "review.jsonl",
    "rejections.jsonl",
)


class CurateSettings(BaseSettings):
    """Everything a curation run reads (env ``H2A_CURATE_*`` plus each section's own prefix)."""

    model_config = SettingsConfigDict(env_prefix="H2A_CURATE_", extra="forbid")

    dataset: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    workers: int = Field(default=2, ge=1, le=64)
    """Videos processed concurrently."""
    store: StoreSettings = Field(default_factory=StoreSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    scenes: SceneSettings = Field(default_factory=SceneSettings)
    persons: PersonSettings = Field(default_factory=PersonSettings)
    clips: ClipSettings = Field(default_factory=ClipSettings)


class Stages(Protocol):
    """The four stage calls, in-process or remote; each raises ``H2AError`` on failure."""

    def ingest(self, item: SourceItem) -> IngestedVideo: ...
    def scenes(self, video: IngestedVideo) -> SceneResult: ...
    def persons(self, video: IngestedVideo, scene: Segment) -> PersonResult: ...
    def clip(self, video: IngestedVideo, segment: Segment) -> ObjectRef: ...


class LocalStages:
    """The stage functions called in-process on one store (the embedded default)."""

    def __init__(self, store: ClipStore, settings: CurateSettings | None = None) -> None:
        self.store = store
        self.settings = settings or CurateSettings()

    def ingest(self, item: SourceItem) -> IngestedVideo:
        return ingest(item, self.store, self.settings.ingest)

    def scenes(self, video: IngestedVideo) -> SceneResult:
        with self.store.open_local(video.raw) as path:
            return detect_scenes(path, video.info, self.settings.scenes)

    def persons(self, video: IngestedVideo, scene: Segment) -> PersonResult:
        with self.store.open_local(video.raw) as path:
            return detect_persons(path, scene, self.settings.persons, self.store)

    def clip(self, video: IngestedVideo, segment: Segment) -> ObjectRef:
        with self.store.open_local(video.raw) as path:
            return encode_clip(path, video.source_id, segment, self.store, self.settings.clips)


def _rejection(item: SourceItem, stage: str, error: H2AError, source_id: str = "") -> Rejection:
    context = {key: value for key, value in error.context.items() if key != "path"}
    return Rejection(
        source=item.location,
        stage=stage,
        reason=error.reason,
        detail=error.detail,
        source_id=source_id,
        context={"hashtag": item.hashtag, **context},
    )


def curate_one(
    item: SourceItem, stages: Stages, clip_settings: ClipSettings | None = None
) -> ClipRecord | Rejection:
    """Run one source through the stages.

    Args:
        item: the source.
        stages: in-process or remote stage calls.
        clip_settings: the clip length bounds used to choose the segment (env by default).

    Returns:
        A ``ClipRecord`` with full provenance, or a ``Rejection``; a scene with too few
        person frames is a rejection at stage ``persons`` with reason ``TOO_FEW_PERSON_FRAMES``
        and the sampled ``frame_indices`` and ``scores`` in its context (the review list).
    """
    clip_settings = clip_settings or ClipSettings()
    try:
        video = stages.ingest(item)
    except H2AError as error:
        return _rejection(item, "ingestion", error)
    stage = "scenes"
    try:
        scenes = stages.scenes(video)
        stage = "persons"
        persons = stages.persons(video, scenes.longest)
        if not persons.passed:
            return Rejection(
                source=item.location,
                stage="persons",
                reason=REVIEW_REASON,
                detail=(
                    f"{persons.positive_frames} of {len(persons.frame_indices)} sampled frames "
                    "show a person"
                ),
                source_id=video.source_id,
                context={
                    "hashtag": item.hashtag,
                    "frame_indices": list(persons.frame_indices),
                    "scores": list(persons.scores),
                    "scene": [scenes.longest.start_frame, scenes.longest.end_frame],
                },
            )
        stage = "clips"
        segment = choose_segment(scenes.longest, persons, clip_settings)
        clip = stages.clip(video, segment)
    except H2AError as error:
        return _rejection(item, stage, error, video.source_id)
    return ClipRecord(
        clip=clip,
        source_id=video.source_id,
        source=item.location,
        hashtag=item.hashtag,
        start_frame=segment.start_frame,
        end_frame=segment.end_frame,
        fps=segment.fps,
        person_frames=persons.positive_frames,
        person_scores=persons.scores,
        metadata={
            **item.metadata,
            "source_duration_s": round(video.info.duration_s, 3),
            "source_size": [video.info.width, video.info.height],
            "scene": [scenes.longest.start_frame, scenes.longest.end_frame],
            "scenes": len(scenes.scenes),
            "person_frame_indices": list(persons.frame_indices),
            "meta_key": video.meta.key,
        },
    )


@dataclass(frozen=True, slots=True)
class CurateSummary:
    """What one run did and where its outputs are."""

    dataset: str
    videos: int
    clips_added: int
    clips_total: int
    review: int
    rejected: int
    reasons: dict[str, int]
    manifests: dict[str, str]
    report: str
    elapsed_s: float
    results: tuple[ClipRecord | Rejection, ...] = field(default=(), repr=False)


def _clip_key(line: str) -> str:
    return json.loads(line)["clip"]["key"]


def _rejection_key(line: str) -> tuple[str, str, str, str]:
    data = json.loads(line)
    return data["source"], data["source_id"], data["stage"], data["reason"]


def _merged(existing: list[str], new: Iterable[str], key: Callable[[str], object]) -> list[str]:
    """``existing`` then the lines of ``new`` whose key is not there yet (first one wins)."""
    seen = {key(line) for line in existing}
    merged = list(existing)
    for line in new:
        if key(line) not in seen:
            seen.add(key(line))
            merged.append(line)
    return merged


def write_manifests(
    store: ClipStore, dataset: str, results: Iterable[ClipRecord | Rejection]
) -> tuple[dict[str, str], int]:
    """Merge this run's results into the dataset manifests; return their URIs and new clips."""
    results = list(results)

    def key(name: str) -> str:
        return ClipStore.manifest_key(dataset, name)

    old_clips = store.get_lines(key("clips.jsonl"))
    clips = _merged(
        old_clips, (r.to_json() for r in results if isinstance(r, ClipRecord)), _clip_key
    )
    review = _merged(
        store.get_lines(key("review.jsonl")),
        (r.to_json() for r in results if isinstance(r, Rejection) and r.reason == REVIEW_REASON),
        _rejection_key,
    )
    rejections = _merged(
        store.get_lines(key("rejections.jsonl")),
        (r.to_json() for r in results if isinstance(r, Rejection) and r.reason != REVIEW_REASON),
        _rejection_key,
    )
    labels: dict[str, int] = (
        store.get_json(key("labels.json")) if store.exists(key("labels.json")) else {}
    )
    records = [ClipRecord.from_json(line) for line in clips]
    # New hashtags get the next labels; existing labels never move (trained heads depend on them).
    for hashtag in sorted({r.hashtag for r in records} - set(labels)):
        labels[hashtag] = len(labels)
    refs = {
        "clips.jsonl": store.put_lines(key("clips.jsonl"), clips),
        "review.jsonl": store.put_lines(key("review.jsonl"), review),
        "rejections.jsonl": store.put_lines(key("rejections.jsonl"), rejections),
        "labels.json": store.put_json(key("labels.json"), labels),
        # VideoMAE list formats: "path 0 -1" (pre-training, unlabelled), "path label".
        "pretrain.csv": store.put_lines(
            key("pretrain.csv"), (f"{r.clip.uri} 0 -1" for r in records)
        ),
        "train.csv": store.put_lines(
            key("train.csv"), (f"{r.clip.uri} {labels[r.hashtag]}" for r in records)
        ),
    }
    return {name: refs[name].uri for name in MANIFEST_NAMES}, len(clips) - len(old_clips)


def curate(
    source: str,
    stages: Stages,
    store: ClipStore,
    dataset: str = "default",
    workers: int = 2,
    progress: bool = True,
    clip_settings: ClipSettings | None = None,
    hashtag: str | None = None,
) -> CurateSummary:
    """Curate every video of ``source`` into the dataset's clips, manifests and report.

    Args:
        source: anything ``expand_source`` accepts.
        stages: in-process or remote stage calls.
        store: where the manifests and report go (the stages write videos and clips).
        dataset: manifests live under ``manifests/{dataset}/``.
        workers: videos processed concurrently.
        progress: show a progress bar on stderr.
        clip_settings: clip length bounds (env by default).
        hashtag: hashtag of items that are not manifest rows (see ``expand_source``).

    Returns:
        Counts of this run and the URIs of the merged manifests and report. A second run over
        the same source adds nothing and loses nothing.
    """
    started = time.monotonic()
    items = expand_source(source, hashtag)
    clip_settings = clip_settings or ClipSettings()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="curate") as pool:
        results = list(
            tqdm(
                pool.map(lambda item: curate_one(item, stages, clip_settings), items),
                total=len(items),
                desc=f"curate {dataset}",
                unit="video",
                disable=not progress,
            )
        )
    manifests, added = write_manifests(store, dataset, results)
    report = write_report(store, dataset)
    rejections = [r for r in results if isinstance(r, Rejection)]
    summary = CurateSummary(
        dataset=dataset,
        videos=len(items),
        clips_added=added,
        clips_total=len(store.get_lines(ClipStore.manifest_key(dataset, "clips.jsonl"))),
        review=sum(r.reason == REVIEW_REASON for r in rejections),
        rejected=sum(r.reason != REVIEW_REASON for r in rejections),
        reasons=dict(Counter(r.reason for r in rejections)),
        manifests=manifests,
        report=report.uri,
        elapsed_s=round(time.monotonic() - started, 2),
        results=tuple(results),
    )
    _logger.info(
        "curation finished",
        extra={
            "dataset": dataset,
            "videos": summary.videos,
            "clips_added": added,
            "review": summary.review,
            "rejected": summary.rejected,
        },
    )
    return summary


def build_stages(
    settings: CurateSettings,
    store: ClipStore,
    services: dict[str, str] | None = None,
    deadline_s: float = 600.0,
) -> Stages:
    """In-process stages, or gRPC stages when service addresses are given.

    Args:
        services: ``{"ingestion": "host:port", "scenes": ..., "persons": ..., "clips": ...}``.
        deadline_s: per-call deadline of the gRPC stages.
    """
    if not services:
        return LocalStages(store, settings)
    # Imported here: the embedded path must not need the generated stubs.
    from services.ingestion.grpc_stages import GrpcStages

    return GrpcStages.from_addresses(services, deadline_s)


def export_dataset(store: ClipStore, dataset: str, out: Path) -> Path:
    """Copy the dataset's manifests, report and plots to the local folder ``out/{dataset}``."""
    target = Path(out) / dataset
    prefix = ClipStore.manifest_key(dataset, "x")[:-1]
    if target.is_dir():
        # A stale plot from an earlier layout would sit beside the fresh report.
        shutil.rmtree(target)
    for key in store.list(prefix):
        store.download(key, target / key[len(prefix) :])
    return target
