"""SceneAnalysis over a real channel returns what ``detect_scenes`` returns in process."""

from __future__ import annotations

from pathlib import Path

import grpc
from hashtag2action.v1 import common_pb2, scenes_pb2, scenes_pb2_grpc

from services.common.messages import to_message
from services.common.records import Segment
from services.common.store import ClipStore, file_sha256
from services.common.video import probe
from services.scenes.detect import SceneSettings, detect_scenes
from services.scenes.server import scene_result_from_proto


def test_bikes_cuts_come_back_over_grpc(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, bikes: Path
) -> None:
    raw = engine_store.put_file(ClipStore.raw_key(file_sha256(bikes)), bikes)
    info = probe(bikes)
    stub = scenes_pb2_grpc.SceneAnalysisStub(channels["scenes"])
    response = stub.DetectScenes(
        scenes_pb2.DetectScenesRequest(
            video=to_message(raw, common_pb2.ObjectRef), info=to_message(info, common_pb2.VideoInfo)
        ),
        timeout=60,
    )
    result = scene_result_from_proto(response)
    assert result == detect_scenes(bikes, info, SceneSettings())
    assert [scene.start_frame for scene in result.scenes] == [0, 30, 76, 137, 187, 242]
    assert result.longest == Segment(76, 137, 25.0)
    # The keyframes travel too: the driver starts clips on them.
    assert result.keyframes and result.keyframes[0] == 0
