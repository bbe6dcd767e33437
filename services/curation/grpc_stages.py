"""``Stages`` over gRPC: the four services called through their stubs, with deadlines.

``curate_one`` runs the same code with this as with ``LocalStages``. A status that carries one of
our reasons comes back as the typed ``H2AError`` (so it becomes a rejection record, as in
process); a failure without one (a service down or restarting, a deadline spent) comes back as
the retryable ``ServiceUnavailable`` or ``DeadlineExceeded`` naming the stage and its address:
it says nothing about the video, so the source is left for the next run, never rejected.
``check_health`` asks the four services' standard health at once, so a run against a service
that is down or misaddressed fails in seconds, naming it, rather than source by source after
each call's deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hashtag2action.v1 import (
    clips_pb2,
    clips_pb2_grpc,
    common_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    persons_pb2,
    persons_pb2_grpc,
    scenes_pb2,
    scenes_pb2_grpc,
)

from services.clips import server as clips_server
from services.common.errors import ConfigError, DeadlineExceeded, ServiceUnavailable
from services.common.grpc_runtime import error_from_rpc
from services.common.messages import from_message, to_message
from services.common.records import STAGES, ClipMedia, EncodedClip, ObjectRef, Segment
from services.ingestion import server as ingestion_server
from services.ingestion.server import item_to_proto, video_from_proto
from services.ingestion.sources import IngestedVideo, SourceItem
from services.persons import server as persons_server
from services.persons.detect import PersonResult
from services.persons.server import person_result_from_proto
from services.scenes import server as scenes_server
from services.scenes.detect import SceneResult
from services.scenes.server import scene_result_from_proto

__all__ = ["HEALTH_TIMEOUT_S", "GrpcStages"]

_Response = TypeVar("_Response")

HEALTH_TIMEOUT_S = 5.0
"""How long ``check_health`` waits for a service to connect and answer."""

# The name each stage's service reports its health under.
_SERVICES = {
    "ingestion": ingestion_server.SERVICE.full_name,
    "scenes": scenes_server.SERVICE.full_name,
    "persons": persons_server.SERVICE.full_name,
    "clips": clips_server.SERVICE.full_name,
}


class GrpcStages:
    """The four stage services behind the ``Stages`` protocol.

    Args:
        channels: one channel per stage name (``STAGES``); closed by ``close``.
        deadline_s: deadline of every call. Calls wait for a service that is still starting
            (``wait_for_ready``) within that deadline rather than failing at once.
    """

    def __init__(
        self,
        channels: dict[str, grpc.Channel],
        deadline_s: float = 120.0,
        addresses: dict[str, str] | None = None,
    ) -> None:
        missing = [name for name in STAGES if name not in channels]
        if missing:
            raise ConfigError(f"no address for stage service(s) {', '.join(missing)}")
        if deadline_s <= 0:
            raise ConfigError(f"deadline_s must be positive, got {deadline_s}")
        self._channels = channels
        self._addresses = addresses or {}
        self.deadline_s = deadline_s
        self._ingestion = ingestion_pb2_grpc.IngestionStub(channels["ingestion"])
        self._scenes = scenes_pb2_grpc.SceneAnalysisStub(channels["scenes"])
        self._persons = persons_pb2_grpc.PersonDetectionStub(channels["persons"])
        self._clips = clips_pb2_grpc.ClipEncodingStub(channels["clips"])

    @classmethod
    def from_addresses(cls, addresses: dict[str, str], deadline_s: float = 120.0) -> GrpcStages:
        """Open an insecure channel to each ``host:port`` (in-cluster traffic), by stage name."""
        unknown = sorted(set(addresses) - set(STAGES))
        if unknown:
            raise ConfigError(f"unknown stage service(s) {', '.join(unknown)}")
        channels = {name: grpc.insecure_channel(addresses[name]) for name in addresses}
        return cls(channels, deadline_s, addresses)

    def _where(self, stage: str) -> str:
        address = self._addresses.get(stage)
        return f"{stage} service" + (f" at {address}" if address else "")

    def check_health(self, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        """Ask every stage service whether it serves its stage, all at once.

        A service still starting has ``timeout_s`` to connect and answer.

        Raises:
            ServiceUnavailable: naming each service that is down, answers NOT_SERVING (shutting
                down) or does not serve its stage (an address of another service).
        """
        checks = {
            stage: health_pb2_grpc.HealthStub(self._channels[stage]).Check.future(
                health_pb2.HealthCheckRequest(service=_SERVICES[stage]),
                timeout=timeout_s,
                wait_for_ready=True,
            )
            for stage in STAGES
        }
        failures = {}
        for stage, check in checks.items():
            try:
                status = check.result().status
            except grpc.RpcError as error:
                failures[stage] = error.code().name  # type: ignore[attr-defined]  # a call's error
                continue
            if status != health_pb2.HealthCheckResponse.SERVING:
                failures[stage] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        if failures:
            raise ServiceUnavailable(
                "not serving: "
                + "; ".join(f"{self._where(stage)} ({why})" for stage, why in failures.items()),
                stages=",".join(failures),
            )

    def _call(self, stage: str, method: Callable[..., _Response], request: Any) -> _Response:
        try:
            return method(request, timeout=self.deadline_s, wait_for_ready=True)
        except grpc.RpcError as error:
            typed = error_from_rpc(error)
            if typed is not None:
                raise typed from error
            where = self._where(stage)
            code = error.code() if hasattr(error, "code") else None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(
                    f"{where} did not answer within {self.deadline_s} s", stage=stage
                ) from error
            raise ServiceUnavailable(
                f"{where} failed without a reason: {code.name if code else error}", stage=stage
            ) from error

    def ingest(self, item: SourceItem) -> IngestedVideo:
        request = ingestion_pb2.IngestRequest(item=item_to_proto(item))
        return video_from_proto(self._call("ingestion", self._ingestion.Ingest, request).video)

    def scenes(self, video: IngestedVideo) -> SceneResult:
        request = scenes_pb2.DetectScenesRequest(
            video=to_message(video.raw, common_pb2.ObjectRef),
            info=to_message(video.info, common_pb2.VideoInfo),
        )
        return scene_result_from_proto(self._call("scenes", self._scenes.DetectScenes, request))

    def persons(self, video: IngestedVideo, scene: Segment) -> PersonResult:
        request = persons_pb2.DetectPersonsRequest(
            video=to_message(video.raw, common_pb2.ObjectRef),
            scene=to_message(scene, common_pb2.Segment),
        )
        return person_result_from_proto(self._call("persons", self._persons.DetectPersons, request))

    def clip(self, video: IngestedVideo, segment: Segment) -> EncodedClip:
        request = clips_pb2.EncodeClipRequest(
            video=to_message(video.raw, common_pb2.ObjectRef),
            source_id=video.source_id,
            segment=to_message(segment, common_pb2.Segment),
            info=to_message(video.info, common_pb2.VideoInfo),
        )
        reply = self._call("clips", self._clips.EncodeClip, request)
        return EncodedClip(
            from_message(reply.clip, ObjectRef), from_message(reply.media, ClipMedia)
        )

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
