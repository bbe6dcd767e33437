"""Real gRPC stage servers on 127.0.0.1, sharing one local clip store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hashtag2action.v1 import (
    clips_pb2_grpc,
    ingestion_pb2_grpc,
    persons_pb2_grpc,
    scenes_pb2_grpc,
)

from services.clips import server as clips_server
from services.clips.encode import ClipSettings
from services.common.config import GrpcSettings, StoreSettings
from services.common.grpc_runtime import GrpcServer, start_server
from services.common.store import ClipStore
from services.ingestion import server as ingestion_server
from services.ingestion.sources import IngestSettings
from services.persons import server as persons_server
from services.persons.detect import PersonSettings
from services.scenes import server as scenes_server
from services.scenes.detect import SceneSettings

# stage name -> (servicer class, its stage settings, generated register function, descriptor)
_STAGES: dict[str, tuple[type, type, Callable[[Any, grpc.Server], None], Any]] = {
    "ingestion": (
        ingestion_server.IngestionServicer,
        IngestSettings,
        ingestion_pb2_grpc.add_IngestionServicer_to_server,
        ingestion_server.SERVICE,
    ),
    "scenes": (
        scenes_server.ScenesServicer,
        SceneSettings,
        scenes_pb2_grpc.add_SceneAnalysisServicer_to_server,
        scenes_server.SERVICE,
    ),
    "persons": (
        persons_server.PersonsServicer,
        PersonSettings,
        persons_pb2_grpc.add_PersonDetectionServicer_to_server,
        persons_server.SERVICE,
    ),
    "clips": (
        clips_server.ClipsServicer,
        ClipSettings,
        clips_pb2_grpc.add_ClipEncodingServicer_to_server,
        clips_server.SERVICE,
    ),
}

StartStage = Callable[..., GrpcServer]


@pytest.fixture(scope="session")
def start_stage() -> Iterator[StartStage]:
    """Start a stage server on a free loopback port: ``start_stage(name, store, servicer=...)``.

    ``servicer`` replaces the default one (a subclass that can hold a call in flight); the
    servers still running at the end of the session are stopped.
    """
    started: list[GrpcServer] = []

    def start(name: str, store: ClipStore, servicer: Any = None, **grpc: Any) -> GrpcServer:
        servicer_type, settings_type, register, service = _STAGES[name]
        servicer = servicer or servicer_type(settings_type(), store)
        settings = GrpcSettings(host="127.0.0.1", port=0, **grpc)
        started.append(start_server(servicer, register, service, settings))
        return started[-1]

    yield start
    for server in started:
        server.stop(grace_s=0)


@pytest.fixture(scope="session")
def engine_store(tmp_path_factory: pytest.TempPathFactory) -> ClipStore:
    root: Path = tmp_path_factory.mktemp("engine") / "store"
    return ClipStore.from_settings(StoreSettings(backend="local", root=root))


@pytest.fixture(scope="session")
def engine(start_stage: StartStage, engine_store: ClipStore) -> dict[str, GrpcServer]:
    """All four stage servers, by stage name, on one store."""
    return {name: start_stage(name, engine_store) for name in _STAGES}


@pytest.fixture(scope="session")
def channels(engine: dict[str, GrpcServer]) -> Iterator[dict[str, grpc.Channel]]:
    opened = {name: grpc.insecure_channel(f"127.0.0.1:{s.port}") for name, s in engine.items()}
    yield opened
    for channel in opened.values():
        channel.close()
