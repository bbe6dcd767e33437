"""The SceneAnalysis gRPC service: ``detect_scenes`` behind a stub.

The servicer unpacks the request, opens the referenced raw video from the shared store, calls
the core function and packs the result; ``services.common.grpc_runtime`` does the serving. The
request's ``VideoInfo`` must describe that video as probed here: its size and frame rate set the
analysis frames, so a made-up one could ask for any size.
"""

from __future__ import annotations

import grpc
from hashtag2action.v1 import common_pb2, scenes_pb2, scenes_pb2_grpc
from pydantic import Field

from services.common.grpc_runtime import ServiceSettings, serve
from services.common.messages import (
    check_info,
    from_message,
    require,
    source_video,
    to_message,
)
from services.common.records import Segment
from services.common.store import ClipStore
from services.common.video import VideoInfo, probe
from services.scenes.detect import SceneResult, SceneSettings, detect_scenes

__all__ = [
    "SERVICE",
    "ScenesServer",
    "ScenesServicer",
    "main",
    "scene_result_from_proto",
    "scene_result_to_proto",
]

SERVICE = scenes_pb2.DESCRIPTOR.services_by_name["SceneAnalysis"]


class ScenesServer(ServiceSettings):
    """Settings of the scenes service: the shared sections plus ``H2A_SCENES_*``."""

    scenes: SceneSettings = Field(default_factory=SceneSettings)


def scene_result_to_proto(result: SceneResult) -> scenes_pb2.DetectScenesResponse:
    return scenes_pb2.DetectScenesResponse(
        scenes=[to_message(scene, common_pb2.Segment) for scene in result.scenes],
        longest_index=result.longest_index,
        keyframes=result.keyframes,
    )


def scene_result_from_proto(message: scenes_pb2.DetectScenesResponse) -> SceneResult:
    return SceneResult(
        scenes=tuple(from_message(scene, Segment) for scene in message.scenes),
        longest_index=message.longest_index,
        keyframes=tuple(message.keyframes),
    )


class ScenesServicer(scenes_pb2_grpc.SceneAnalysisServicer):
    def __init__(self, settings: SceneSettings, store: ClipStore) -> None:
        self._settings = settings
        self._store = store

    def DetectScenes(
        self, request: scenes_pb2.DetectScenesRequest, context: grpc.ServicerContext
    ) -> scenes_pb2.DetectScenesResponse:
        require(request, "video", "info")
        info = from_message(request.info, VideoInfo)
        ref = source_video(request.video, self._store)
        with self._store.open_local(ref) as path:
            probed = probe(path)
            check_info(info, probed)
            result = detect_scenes(path, probed, self._settings)
        return scene_result_to_proto(result)


def main() -> None:
    settings = ScenesServer()
    servicer = ScenesServicer(settings.scenes, ClipStore.from_settings(settings.store))
    serve(servicer, scenes_pb2_grpc.add_SceneAnalysisServicer_to_server, SERVICE, settings)
