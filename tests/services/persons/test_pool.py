"""The persons service detects in a pool of worker processes: concurrent calls overlap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
from hashtag2action.v1 import common_pb2, persons_pb2, persons_pb2_grpc

from services.common.config import StoreSettings
from services.common.grpc_runtime import GrpcServer
from services.common.messages import to_message
from services.common.records import Segment
from services.common.store import ClipStore, file_sha256
from services.persons.detect import PersonSettings, detect_persons
from services.persons.server import Detection, DetectorPool, PersonsServicer


class _RecordingPool(DetectorPool):
    """Keeps every detection, with when and where it ran."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.detections: list[Detection] = []

    def detect(self, path: Path, scene: Segment) -> Detection:
        detection = super().detect(path, scene)
        self.detections.append(detection)
        return detection


def test_two_calls_detect_at_once_with_a_pool_of_two(
    start_stage: Callable[..., GrpcServer], tmp_path: Path, carphone: Path
) -> None:
    settings = StoreSettings(backend="local", root=tmp_path / "store")
    store = ClipStore.from_settings(settings)
    pool = _RecordingPool(PersonSettings(), settings, 2)
    try:
        servicer = PersonsServicer(PersonSettings(), store, pool)
        server = start_stage("persons", store, servicer=servicer, max_workers=4)
        raw = store.put_file(ClipStore.raw_key(file_sha256(carphone)), carphone)
        scene = Segment(0, 120, 30000 / 1001)
        request = persons_pb2.DetectPersonsRequest(
            video=to_message(raw, common_pb2.ObjectRef), scene=to_message(scene, common_pb2.Segment)
        )
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = persons_pb2_grpc.PersonDetectionStub(channel)
            calls = [stub.DetectPersons.future(request, timeout=300) for _ in range(2)]
            responses = [call.result() for call in calls]
    finally:
        pool.close()

    expected = detect_persons(carphone, scene, PersonSettings())
    assert all(response.passed == expected.passed for response in responses)
    assert [tuple(response.scores) for response in responses] == [expected.scores] * 2
    first, second = pool.detections
    # Two processes, and each started before the other finished.
    assert first.worker != second.worker
    assert max(first.started, second.started) < min(first.finished, second.finished)
