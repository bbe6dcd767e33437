"""The order of the stages, written once: ingest -> scenes -> persons -> clip, then the dataset.

``curate_one`` runs one source through a ``Stages`` implementation: ``LocalStages`` calls the
stage functions in-process (the embedded default); ``GrpcStages``
(``services/curation/grpc_stages.py``) calls the four services. Both take the same path, so an
embedded run and a cluster run record the same outcomes. An ``H2AError`` that is a verdict on
the video becomes a ``Rejection``; a retryable one (store or service unavailable, deadline,
failed download) a ``FailedAttempt`` that the next run retries; anything else is a bug and fails
loudly, after the outcomes already made are committed. ``curate`` commits outcomes to the
dataset (``services.common.dataset``) and publishes its lists and report.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from tqdm import tqdm

from services.clips.encode import ClipDraft, ClipSettings, encode_clip
from services.common.config import StoreSettings
from services.common.dataset import REVIEW_REASON, VIEW_NAMES, Dataset, Snapshot
from services.common.errors import DownloadFailed, H2AError, InvalidSource
from services.common.records import (
    ClipRecord,
    EncodedClip,
    FailedAttempt,
    Outcome,
    Rejection,
    Segment,
)
from services.common.store import ClipStore
from services.curation.fused import detect_and_draft
from services.curation.report import REPORT_NAME, write_report
from services.curation.segment import choose_segment, usable_scene, whole_scene
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
    "CurateSettings",
    "CurateSummary",
    "LocalStages",
    "Stages",
    "build_stages",
    "curate",
    "curate_one",
    "export_dataset",
    "publish_dataset",
]

_logger = logging.getLogger(__name__)

# Retryable failures that speak about the source, not about our infrastructure: they count
# towards giving up on it. A store or service outage never does.
_SOURCE_FAILURES = frozenset({DownloadFailed.reason})


class CurateSettings(BaseSettings):
    """Everything a curation run reads (env ``H2A_CURATE_*`` plus each section's own prefix)."""

    model_config = SettingsConfigDict(env_prefix="H2A_CURATE_", extra="forbid")

    dataset: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    workers: int = Field(default=2, ge=1, le=64)
    """Videos processed concurrently."""
    commit_every: int = Field(default=50, ge=1)
    """Outcomes per committed dataset part: a crash loses at most the ones since the last."""
    max_attempts: int = Field(default=3, ge=1)
    """A source whose download failed this many runs in a row is recorded as rejected."""
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
    def clip(self, video: IngestedVideo, segment: Segment) -> EncodedClip: ...


@dataclass
class _LocalCopy:
    """One verified local copy of a video, shared by the stages of its run."""

    opening: threading.Lock = field(default_factory=threading.Lock)
    closer: ExitStack = field(default_factory=ExitStack)
    path: Path | None = None
    users: int = 0
    finished: bool = False
    """No stage of this video's run follows: close the copy once nobody uses it."""
    draft: ClipDraft | None = None
    """The clip the persons stage encoded on its pass (``services.curation.fused``), kept for
    the clip stage; closed with the copy."""

    def take_draft(self) -> ClipDraft | None:
        draft, self.draft = self.draft, None
        return draft

    def close(self) -> None:
        draft = self.take_draft()
        if draft is not None:
            draft.close()
        self.closer.close()


class LocalStages:
    """The stage functions called in-process on one store (the embedded default).

    When the whole scene becomes the clip, the persons stage reads it once for the detector and
    the clip encoder (``services.curation.fused``) and the clip stage stores that clip.

    The stages of a video share one verified local copy of it (``open_local`` hashes the file,
    and downloads it from a remote store), keyed by its sha256: opened by the first stage,
    closed after the clip stage or when a stage ends the run (a failed persons verdict, an
    error). A run the driver ends between two stages (a scene too short) leaves its copy idle;
    beyond ``settings.workers`` idle copies the oldest is closed.
    """

    def __init__(self, store: ClipStore, settings: CurateSettings | None = None) -> None:
        self.store = store
        self.settings = settings or CurateSettings()
        self._copies: dict[str, _LocalCopy] = {}
        self._lock = threading.Lock()

    @contextmanager
    def _local(self, video: IngestedVideo, last: bool = False) -> Iterator[_LocalCopy]:
        """The video's verified local copy; ``last``: no stage of its run follows."""
        key = video.raw.sha256
        with self._lock:
            copy = self._copies.pop(key, None) or _LocalCopy()
            self._copies[key] = copy  # the most recently used last
            copy.users += 1
        try:
            with copy.opening:
                if copy.path is None:
                    copy.path = copy.closer.enter_context(self.store.open_local(video.raw))
            yield copy
        except BaseException:
            last = True  # the driver ends the run on any failure
            raise
        finally:
            with self._lock:
                copy.users -= 1
                copy.finished |= last
            self._settle()

    def _finish(self, video: IngestedVideo) -> None:
        with self._lock:
            copy = self._copies.get(video.raw.sha256)
            if copy is not None:
                copy.finished = True
        self._settle()

    def _settle(self) -> None:
        """Close the copies nobody uses that are finished, or idle beyond ``workers``."""
        with self._lock:
            idle = [key for key, copy in self._copies.items() if not copy.users]
            waiting = [key for key in idle if not self._copies[key].finished]
            excess = set(waiting[: max(0, len(waiting) - self.settings.workers)])
            closing = [
                self._copies.pop(key) for key in idle if self._copies[key].finished or key in excess
            ]
        for copy in closing:
            copy.close()

    def ingest(self, item: SourceItem) -> IngestedVideo:
        return ingest(item, self.store, self.settings.ingest)

    def scenes(self, video: IngestedVideo) -> SceneResult:
        with self._local(video) as copy:
            return detect_scenes(copy.path, video.info, self.settings.scenes)

    def persons(self, video: IngestedVideo, scene: Segment) -> PersonResult:
        settings = self.settings
        with self._local(video) as copy:
            fused = None
            key = ClipStore.clip_key(video.source_id, scene.start_frame, scene.end_frame)
            # A clip already stored is reused by the clip stage: nothing to encode then.
            if whole_scene(scene, settings.clips) and self.store.stat(key) is None:
                fused = detect_and_draft(
                    copy.path,
                    video.source_id,
                    scene,
                    video.info,
                    self.store,
                    settings.persons,
                    settings.clips,
                )
            if fused is None:
                result = detect_persons(copy.path, scene, settings.persons, self.store)
            else:
                result, draft = fused
                with self._lock:
                    previous, copy.draft = copy.draft, draft
                if previous is not None:
                    previous.close()
        if not result.passed:
            self._finish(video)  # the driver files it for review: no clip stage follows
        return result

    def clip(self, video: IngestedVideo, segment: Segment) -> EncodedClip:
        with self._local(video, last=True) as copy:
            with self._lock:
                draft = copy.take_draft()
            if draft is not None and draft.segment == segment:
                return draft.finish()
            if draft is not None:
                draft.close()
            return encode_clip(
                copy.path, video.source_id, segment, self.store, self.settings.clips, video.info
            )


def _failure(
    item: SourceItem, stage: str, error: H2AError, source_id: str = ""
) -> Rejection | FailedAttempt:
    if error.retryable:
        _logger.warning(
            "attempt failed, source left for the next run: %s",
            error,
            extra={"source_id": source_id, "stage": stage, "reason": error.reason},
        )
        return FailedAttempt(item.location, stage, error.reason, error.detail, source_id)
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
) -> Outcome:
    """Run one source through the stages.

    Args:
        item: the source.
        stages: in-process or remote stage calls.
        clip_settings: the clip length bounds used to choose the segment (env by default).

    Returns:
        A ``ClipRecord`` with full provenance, a ``Rejection``, or a ``FailedAttempt`` (a
        retryable failure). A scene with too few person frames is a rejection at stage
        ``persons`` with reason ``TOO_FEW_PERSON_FRAMES`` and the sampled ``frame_indices`` and
        ``scores`` in its context (the review list).
    """
    clip_settings = clip_settings or ClipSettings()
    if item.problem:
        return _failure(item, "ingestion", InvalidSource(item.problem))
    try:
        video = stages.ingest(item)
    except H2AError as error:
        return _failure(item, "ingestion", error)
    stage = "scenes"
    try:
        scenes = stages.scenes(video)
        stage = "persons"
        scene = usable_scene(scenes.longest, scenes.keyframes, clip_settings)
        persons = stages.persons(video, scene)
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
        segment = choose_segment(scene, persons, clip_settings)
        encoded = stages.clip(video, segment)
    except H2AError as error:
        return _failure(item, stage, error, video.source_id)
    return ClipRecord(
        clip=encoded.clip,
        media=encoded.media,
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
    clips: int
    """Sources of this run that became a clip."""
    clips_added: int | None
    """Clips the dataset did not hold before this run (None when the run did not publish)."""
    clips_total: int | None
    """Clips in the published dataset after this run (None when the run did not publish)."""
    review: int
    rejected: int
    reasons: dict[str, int]
    failed: tuple[FailedAttempt, ...]
    """Sources that broke off on a retryable failure: no outcome recorded, the next run retries."""
    parts: tuple[str, ...]
    """Store keys of the parts this run committed."""
    repaired: tuple[str, ...]
    """Stored objects that failed verification and were written again from their source."""
    manifests: dict[str, str]
    """Published view name -> store URI (empty when the run did not publish)."""
    report: str
    elapsed_s: float
    results: tuple[Outcome, ...] = field(default=(), repr=False)


class _Committer:
    """Commits a run's outcomes to the dataset every ``every`` outcomes, so a crash loses at most
    the ones since the last commit; turns a source's failed download into a rejection once it
    failed ``max_attempts`` times in a row (across runs)."""

    def __init__(
        self, dataset: Dataset, every: int, max_attempts: int, attempts: dict[str, int] | None
    ) -> None:
        self.dataset = dataset
        self.every = every
        self.max_attempts = max_attempts
        self._attempts = attempts
        self._pending: list[Outcome] = []
        self.parts: list[str] = []

    def push(self, result: Outcome) -> Outcome:
        if isinstance(result, FailedAttempt) and result.reason in _SOURCE_FAILURES:
            result = self._maybe_give_up(result)
        self._pending.append(result)
        if len(self._pending) >= self.every:
            self.flush()
        return result

    def _maybe_give_up(self, attempt: FailedAttempt) -> Outcome:
        if self._attempts is None:
            self._attempts = dict(self.dataset.snapshot().attempts)
        tries = self._attempts.get(attempt.source, 0) + 1
        self._attempts[attempt.source] = tries
        if tries < self.max_attempts:
            return attempt
        return Rejection(
            source=attempt.source,
            stage=attempt.stage,
            reason=attempt.reason,
            detail=f"{attempt.detail} (failed {tries} times in a row; recorded as a rejection)",
            source_id=attempt.source_id,
        )

    def flush(self) -> None:
        if self._pending:
            part = self.dataset.add(self._pending)
            self._pending = []
            if part:
                self.parts.append(part)


def publish_dataset(store: ClipStore, dataset: str) -> Snapshot:
    """Publish the dataset's lists and its report from its current state."""
    return Dataset(store, dataset).publish(also=lambda snapshot: write_report(store, snapshot))


def curate(
    source: str,
    stages: Stages,
    store: ClipStore,
    dataset: str = "default",
    workers: int = 2,
    progress: bool = True,
    clip_settings: ClipSettings | None = None,
    hashtag: str | None = None,
    publish: bool = True,
    commit_every: int = 50,
    max_attempts: int = 3,
) -> CurateSummary:
    """Curate every video of ``source`` into the dataset: outcomes committed, lists published.

    Args:
        source: anything ``expand_source`` accepts.
        stages: in-process or remote stage calls.
        store: where the dataset lives (the stages write videos and clips).
        dataset: the dataset's name.
        workers: videos processed concurrently.
        progress: show a progress bar on stderr.
        clip_settings: clip length bounds (env by default).
        hashtag: hashtag of items that are not manifest rows (see ``expand_source``).
        publish: rebuild the dataset's lists and report after committing; concurrent runs
            that publish converge on the newest state. Without it a run costs only its own
            records (the pipeline's shards publish once, after all of them).
        commit_every: outcomes per committed part.
        max_attempts: a source whose download failed this many times in a row is rejected.

    Returns:
        Counts of this run and where the published lists and report are. A second run over
        the same source adds nothing and loses nothing: each source's outcome is replaced by
        its newest one. A failure that is not an ``H2AError`` (a bug) is raised after the
        outcomes already made are committed.
    """
    started = time.monotonic()
    items = expand_source(source, hashtag)
    clip_settings = clip_settings or ClipSettings()
    target = Dataset(store, dataset)
    before = target.snapshot() if publish else None
    committer = _Committer(
        target, commit_every, max_attempts, None if before is None else dict(before.attempts)
    )
    results: list[Outcome] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="curate")
    bar = tqdm(total=len(items), desc=f"curate {dataset}", unit="video", disable=not progress)
    try:
        futures = [pool.submit(curate_one, item, stages, clip_settings) for item in items]
        for future in as_completed(futures):
            results.append(committer.push(future.result()))
            bar.update()
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
        committer.flush()
    snapshot = publish_dataset(store, dataset) if publish else None
    summary = _summary(target, items, results, committer.parts, before, snapshot, store, started)
    _logger.info(
        "curation finished",
        extra={
            "dataset": dataset,
            "videos": summary.videos,
            "clips": summary.clips,
            "review": summary.review,
            "rejected": summary.rejected,
            "failed": len(summary.failed),
        },
    )
    return summary


def _summary(
    target: Dataset,
    items: list[SourceItem],
    results: list[Outcome],
    parts: list[str],
    before: Snapshot | None,
    after: Snapshot | None,
    store: ClipStore,
    started: float,
) -> CurateSummary:
    rejections = [r for r in results if isinstance(r, Rejection)]
    clips = [r for r in results if isinstance(r, ClipRecord)]
    added = None
    if before is not None:
        known = {clip.clip.key for clip in before.clips}
        added = len({clip.clip.key for clip in clips} - known)
    published = after is not None
    return CurateSummary(
        dataset=target.name,
        videos=len(items),
        clips=len(clips),
        clips_added=added,
        clips_total=len(after.clips) if after is not None else None,
        review=sum(r.reason == REVIEW_REASON for r in rejections),
        rejected=sum(r.reason != REVIEW_REASON for r in rejections),
        reasons=dict(Counter(r.reason for r in rejections)),
        failed=tuple(r for r in results if isinstance(r, FailedAttempt)),
        parts=tuple(parts),
        repaired=tuple(store.drain_repairs()),
        manifests={name: target.view_uri(name) for name in VIEW_NAMES} if published else {},
        report=target.view_uri(REPORT_NAME) if published else "",
        elapsed_s=round(time.monotonic() - started, 2),
        results=tuple(results),
    )


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

    Raises:
        ServiceUnavailable: a service that is down or not serving its stage, named, within
            seconds (``GrpcStages.check_health``).
    """
    if not services:
        return LocalStages(store, settings)
    # Imported here: the embedded path must not need the generated stubs.
    from services.curation.grpc_stages import GrpcStages

    stages = GrpcStages.from_addresses(services, deadline_s)
    try:
        stages.check_health()
    except H2AError:
        stages.close()
        raise
    return stages


def export_dataset(store: ClipStore, dataset: str, out: Path) -> Path:
    """Copy the dataset's published lists, report and plots to the folder ``out/{dataset}``."""
    target = Path(out) / dataset
    if target.is_dir():
        # A stale plot from an earlier layout would sit beside the fresh report.
        shutil.rmtree(target)
    return Dataset(store, dataset).export(out)
