"""The serving runtime through real channels: health, reflection, deadlines, errors, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from hashtag2action.v1 import common_pb2, scenes_pb2, scenes_pb2_grpc

from services.common.config import StoreSettings
from services.common.errors import InvalidKey, InvalidRequest, ObjectNotFound
from services.common.grpc_runtime import GrpcServer, error_from_rpc
from services.common.logs import JsonFormatter
from services.common.messages import to_message
from services.common.store import ClipStore, file_sha256
from services.common.video import probe
from services.scenes.detect import SceneSettings
from services.scenes.server import ScenesServicer

SERVICES = {
    "ingestion": "hashtag2action.v1.Ingestion",
    "scenes": "hashtag2action.v1.SceneAnalysis",
    "persons": "hashtag2action.v1.PersonDetection",
    "clips": "hashtag2action.v1.ClipEncoding",
}


def _scenes_request(store: ClipStore, video: Path) -> scenes_pb2.DetectScenesRequest:
    raw = store.put_file(ClipStore.raw_key(file_sha256(video)), video)
    return scenes_pb2.DetectScenesRequest(
        video=to_message(raw, common_pb2.ObjectRef),
        info=to_message(probe(video), common_pb2.VideoInfo),
    )


def _status(server: GrpcServer, service: str) -> int:
    """Health as the server holds it, readable after it stopped taking calls."""
    return server.health.Check(health_pb2.HealthCheckRequest(service=service), None).status


def _health(port: int, service: str, timeout: float = 5) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def test_every_service_reports_serving(engine: dict[str, GrpcServer]) -> None:
    for name, server in engine.items():
        assert _health(server.port, SERVICES[name]) == health_pb2.HealthCheckResponse.SERVING
        assert _health(server.port, "") == health_pb2.HealthCheckResponse.SERVING
        # Probes are exempt from the deadline floor meant for stage calls.
        assert _health(server.port, "", timeout=0.2) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            _health(server.port, "hashtag2action.v1.NoSuchService")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_service(channels: dict[str, grpc.Channel]) -> None:
    for name, channel in channels.items():
        listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {SERVICES[name], "grpc.health.v1.Health"} <= listed
        # Reflection serves the descriptors too, so grpcurl can build requests untyped.
        pool_service = ProtoReflectionDescriptorDatabase(channel).FindFileContainingSymbol(
            SERVICES[name]
        )
        assert pool_service.package == "hashtag2action.v1"


def test_deadline_too_short_is_refused_before_work(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, bikes: Path
) -> None:
    stub = scenes_pb2_grpc.SceneAnalysisStub(channels["scenes"])
    request = _scenes_request(engine_store, bikes)
    with pytest.raises(grpc.RpcError) as caught:
        stub.DetectScenes(request, timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server refused it (its message), rather than the client timing out mid-call.
    assert "minimum is 0.5 s" in caught.value.details()
    assert error_from_rpc(caught.value) is None
    assert len(stub.DetectScenes(request, timeout=30).scenes) == 6


def test_bad_references_come_back_as_typed_errors(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, tmp_path: Path, bikes: Path
) -> None:
    stub = scenes_pb2_grpc.SceneAnalysisStub(channels["scenes"])
    good = _scenes_request(engine_store, bikes)
    missing_sum = "0" * 64
    missing_key = ClipStore.raw_key(missing_sum)
    other_store = ClipStore.from_settings(StoreSettings(backend="local", root=tmp_path))
    cases = [
        (
            common_pb2.ObjectRef(
                key=missing_key, uri=engine_store.uri(missing_key), sha256=missing_sum
            ),
            ObjectNotFound,
        ),
        (common_pb2.ObjectRef(key="raw/../../etc/passwd", uri="file:///etc/passwd"), InvalidKey),
        # A reference into another store: client and server disagree on H2A_STORE_*.
        (common_pb2.ObjectRef(key=good.video.key, uri=other_store.uri(good.video.key)), InvalidKey),
    ]
    for ref, expected in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.DetectScenes(scenes_pb2.DetectScenesRequest(video=ref, info=good.info), timeout=30)
        assert caught.value.code().name == expected.grpc_status
        error = error_from_rpc(caught.value)
        assert isinstance(error, expected)
        assert error.reason == expected.reason

    with pytest.raises(grpc.RpcError) as caught:
        stub.DetectScenes(scenes_pb2.DetectScenesRequest(video=good.video), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error_from_rpc(caught.value), InvalidRequest)


class _HeldScenes(ScenesServicer):
    """Signals when a call is in flight and holds it there until released."""

    def __init__(self, store: ClipStore) -> None:
        super().__init__(SceneSettings(), store)
        self.entered = threading.Event()
        self.release = threading.Event()

    def DetectScenes(
        self, request: scenes_pb2.DetectScenesRequest, context: grpc.ServicerContext
    ) -> scenes_pb2.DetectScenesResponse:
        self.entered.set()
        assert self.release.wait(30)
        return super().DetectScenes(request, context)


@pytest.mark.parametrize("trigger", ["stop", "sigterm"])
def test_graceful_stop_answers_not_serving_while_the_call_in_flight_finishes(
    start_stage: Callable[..., GrpcServer], local_store: ClipStore, bikes: Path, trigger: str
) -> None:
    servicer = _HeldScenes(local_store)
    server = start_stage("scenes", local_store, servicer=servicer)
    request = _scenes_request(local_store, bikes)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = scenes_pb2_grpc.SceneAnalysisStub(channel)
            in_flight = stub.DetectScenes.future(request, timeout=60)
            assert servicer.entered.wait(30)

            if trigger == "sigterm":
                server.stop_on_signals()  # what serve() installs
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                threading.Thread(target=server.stop, kwargs={"grace_s": 30}).start()
            # Health answers NOT_SERVING, through the channel, for as long as the call runs.
            deadline = time.monotonic() + 10
            while (
                _health(server.port, SERVICES["scenes"])
                != health_pb2.HealthCheckResponse.NOT_SERVING
            ):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert _health(server.port, "") == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as refused:
                stub.DetectScenes(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert (
                _health(server.port, SERVICES["scenes"])
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )

            servicer.release.set()
            assert len(in_flight.result(timeout=30).scenes) == 6
            assert server.wait(30)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    with pytest.raises(grpc.RpcError) as gone:
        _health(server.port, SERVICES["scenes"], timeout=1)
    assert gone.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class _Verbose(ScenesServicer):
    """Rejects every call with a detail and context far larger than any header may be."""

    def DetectScenes(
        self, request: scenes_pb2.DetectScenesRequest, context: grpc.ServicerContext
    ) -> scenes_pb2.DetectScenesResponse:
        echo = "é" * 100_000
        raise InvalidRequest(f"bad input {echo}", **{f"field{i}": echo for i in range(50)})


def test_error_details_and_log_lines_stay_bounded(
    start_stage: Callable[..., GrpcServer],
    local_store: ClipStore,
    bikes: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start_stage("scenes", local_store, servicer=_Verbose(SceneSettings(), local_store))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = scenes_pb2_grpc.SceneAnalysisStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.DetectScenes(_scenes_request(local_store, bikes), timeout=30)
    # The reply arrives (not RESOURCE_EXHAUSTED for oversized headers) with its reason.
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = error_from_rpc(caught.value)
    assert isinstance(error, InvalidRequest)
    assert error.detail.startswith("bad input é") and "characters)" in error.detail
    assert len(error.detail.encode()) < 1024 and 0 < len(error.context) <= 8
    (rejected,) = [record for record in caplog.records if record.getMessage() == "call rejected"]
    line = JsonFormatter("scenes").format(rejected)
    assert len(line.encode()) < 8192 and json.loads(line)["reason"] == "INVALID_REQUEST"


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def test_sigterm_stops_the_service_process_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "H2A_GRPC_HOST": "127.0.0.1",
        "H2A_GRPC_PORT": str(port),
        "H2A_STORE_ROOT": str(tmp_path / "store"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.scenes"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "service did not start"
            try:
                if _health(port, SERVICES["scenes"]) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    messages = [line for line in output.splitlines() if line.startswith("{")]
    assert any('"message": "signal received"' in line for line in messages), output
    assert '"message": "stopped"' in messages[-1], output
