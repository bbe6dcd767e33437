"""PersonDetection over a real channel: the in-process verdict, and bad segments refused."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hashtag2action.v1 import common_pb2, persons_pb2, persons_pb2_grpc

from services.common.errors import InvalidRequest
from services.common.grpc_runtime import error_from_rpc
from services.common.messages import to_message
from services.common.records import Segment
from services.common.store import ClipStore, file_sha256
from services.persons.detect import PersonSettings, detect_persons
from services.persons.server import person_result_from_proto


def test_carphone_verdict_matches_in_process(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, carphone: Path
) -> None:
    raw = engine_store.put_file(ClipStore.raw_key(file_sha256(carphone)), carphone)
    scene = Segment(0, 120, 30000 / 1001)
    stub = persons_pb2_grpc.PersonDetectionStub(channels["persons"])
    response = stub.DetectPersons(
        persons_pb2.DetectPersonsRequest(
            video=to_message(raw, common_pb2.ObjectRef),
            scene=to_message(scene, common_pb2.Segment),
        ),
        timeout=120,
    )
    result = person_result_from_proto(response)
    # Scores travel as doubles: the review list shows exactly what the detector said.
    assert result == detect_persons(carphone, scene, PersonSettings(), engine_store)
    assert result.passed and len(result.frame_indices) == PersonSettings().num_frames


def test_a_segment_that_is_not_a_range_is_invalid(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, carphone: Path
) -> None:
    raw = engine_store.put_file(ClipStore.raw_key(file_sha256(carphone)), carphone)
    stub = persons_pb2_grpc.PersonDetectionStub(channels["persons"])
    with pytest.raises(grpc.RpcError) as caught:
        stub.DetectPersons(
            persons_pb2.DetectPersonsRequest(
                video=to_message(raw, common_pb2.ObjectRef),
                scene=common_pb2.Segment(start_frame=90, end_frame=30, fps=25.0),
            ),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error_from_rpc(caught.value), InvalidRequest)
