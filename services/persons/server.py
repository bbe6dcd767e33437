"""The PersonDetection gRPC service: ``detect_persons`` behind a stub, in a pool of processes.

Too few person frames is a verdict in the response (``passed`` false, with the scores), not an
error status: the caller files it in the review list. ``detect_persons`` runs one prediction at a
time per process (a YOLO model object keeps per-call state, so one model is not shared by calls),
so the service detects in ``DetectorPool`` worker processes, each with its own model: as many
calls predict at once as there are workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.synchronize import Barrier, Lock
from pathlib import Path
from typing import NamedTuple

import grpc
from hashtag2action.v1 import persons_pb2, persons_pb2_grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.config import StoreSettings
from services.common.errors import ServiceUnavailable
from services.common.grpc_runtime import ServiceSettings, serve
from services.common.messages import check_segment, from_message, require, source_video
from services.common.records import Segment
from services.common.store import ClipStore
from services.common.video import probe
from services.persons.detect import PersonResult, PersonSettings, detect_persons, load_model

__all__ = [
    "SERVICE",
    "Detection",
    "DetectorPool",
    "DetectorPoolSettings",
    "PersonsServer",
    "PersonsServicer",
    "main",
    "person_result_from_proto",
    "person_result_to_proto",
]

_logger = logging.getLogger(__name__)

SERVICE = persons_pb2.DESCRIPTOR.services_by_name["PersonDetection"]


class DetectorPoolSettings(BaseSettings):
    """How many detections the service runs at once (env ``H2A_PERSONS_POOL_*``)."""

    model_config = SettingsConfigDict(env_prefix="H2A_PERSONS_POOL_", extra="forbid")

    size: int = Field(default=0, ge=0, le=64)
    """Worker processes, each with its own model (about 600 MB on CPU); 0: one per gRPC worker
    (``H2A_GRPC_MAX_WORKERS``), so no call waits for a model."""


class PersonsServer(ServiceSettings):
    """Settings of the persons service: the shared sections plus ``H2A_PERSONS_*``."""

    persons: PersonSettings = Field(default_factory=PersonSettings)
    pool: DetectorPoolSettings = Field(default_factory=DetectorPoolSettings)


def person_result_to_proto(result: PersonResult) -> persons_pb2.DetectPersonsResponse:
    return persons_pb2.DetectPersonsResponse(
        frame_indices=result.frame_indices,
        scores=result.scores,
        positive_frames=result.positive_frames,
        passed=result.passed,
    )


def person_result_from_proto(message: persons_pb2.DetectPersonsResponse) -> PersonResult:
    return PersonResult(
        frame_indices=tuple(message.frame_indices),
        scores=tuple(message.scores),
        positive_frames=message.positive_frames,
        passed=message.passed,
    )


class Detection(NamedTuple):
    """One detection done by a pool worker, with when it ran there (``time.monotonic``, one
    clock for every process of the machine)."""

    result: PersonResult
    worker: int
    """The worker's process id."""
    started: float
    finished: float


# A worker process's own store client, for weights under models/ (set by _start_worker).
_worker_store: ClipStore | None = None


def _start_worker(
    settings: PersonSettings, store: StoreSettings, loading: Lock, ready: Barrier
) -> None:
    """Set up a pool process: its store client and its model, before it takes any call."""
    global _worker_store
    # Ctrl-C reaches the whole process group; the parent stops the workers once its calls end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_store = ClipStore.from_settings(store)
    # One at a time: the first worker downloads the weights into the shared local cache.
    with loading:
        load_model(settings, _worker_store)
    ready.wait()


def _detect(path: str, scene: Segment, settings: PersonSettings) -> Detection:
    started = time.monotonic()
    result = detect_persons(Path(path), scene, settings, _worker_store)
    return Detection(result, os.getpid(), started, time.monotonic())


class DetectorPool:
    """``detect_persons`` in ``size`` worker processes, each with its own model.

    Workers are spawned, not forked (a fork would copy the locks of the gRPC server's threads),
    and every one has loaded its model before the pool is returned. A worker that dies (out of
    memory, say) breaks the executor: the call fails as retryable and a fresh set takes over.

    Args:
        settings: the detector settings every worker uses.
        store: the store the workers read ``models/`` weights from.
        size: the number of workers.
    """

    def __init__(self, settings: PersonSettings, store: StoreSettings, size: int) -> None:
        self._settings = settings
        self._store = store
        self.size = size
        self._replacing = threading.Lock()
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(
            self.size,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self._settings, self._store, context.Lock(), context.Barrier(self.size)),
        )
        # Each task starts a worker of its own (none is idle yet); none runs before all loaded.
        for started in [executor.submit(os.getpid) for _ in range(self.size)]:
            started.result()
        return executor

    def detect(self, path: Path, scene: Segment) -> Detection:
        """Detect persons in ``scene`` of the local video at ``path`` on a free worker."""
        executor = self._executor
        submitted = time.monotonic()
        try:
            detection = executor.submit(_detect, str(path), scene, self._settings).result()
        except BrokenProcessPool as error:
            with self._replacing:
                if self._executor is executor:
                    self._executor = self._start()
            raise ServiceUnavailable("a person detector process died; it was replaced") from error
        _logger.info(
            "persons detected",
            extra={
                "worker": detection.worker,
                "queued_ms": round((detection.started - submitted) * 1e3, 1),
                "ms": round((detection.finished - detection.started) * 1e3, 1),
            },
        )
        return detection

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class PersonsServicer(persons_pb2_grpc.PersonDetectionServicer):
    """Detects in ``pool`` when given, else in the calling thread (one call at a time)."""

    def __init__(
        self, settings: PersonSettings, store: ClipStore, pool: DetectorPool | None = None
    ) -> None:
        self._settings = settings
        self._store = store
        self._pool = pool

    def DetectPersons(
        self, request: persons_pb2.DetectPersonsRequest, context: grpc.ServicerContext
    ) -> persons_pb2.DetectPersonsResponse:
        require(request, "video", "scene")
        scene = from_message(request.scene, Segment)
        ref = source_video(request.video, self._store)
        with self._store.open_local(ref) as path:
            check_segment(scene, probe(path))
            if self._pool is None:
                result = detect_persons(path, scene, self._settings, self._store)
            else:
                result = self._pool.detect(path, scene).result
        return person_result_to_proto(result)


def main() -> None:
    settings = PersonsServer()
    # Every worker loads its weights before the service reports SERVING: no call pays for it.
    pool = DetectorPool(
        settings.persons, settings.store, settings.pool.size or settings.grpc.max_workers
    )
    servicer = PersonsServicer(settings.persons, ClipStore.from_settings(settings.store), pool)
    try:
        serve(servicer, persons_pb2_grpc.add_PersonDetectionServicer_to_server, SERVICE, settings)
    finally:
        pool.close()
