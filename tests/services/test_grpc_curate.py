"""A full curate over the four gRPC services records what the in-process run records; a dead
service leaves its sources for a retry instead of aborting the run.

The engine's ingestion service reads no local file (its allowed roots are empty, the default):
tests that ingest local files over gRPC start one whose roots hold them."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from services.common.dataset import Dataset
from services.common.errors import (
    DeadlineExceeded,
    ServiceUnavailable,
    SourceNotFound,
    UnreadableVideo,
)
from services.common.grpc_runtime import GrpcServer
from services.common.records import STAGES
from services.common.store import ClipStore
from services.curation import commands
from services.curation.curate import CurateSettings, LocalStages, build_stages, curate
from services.curation.grpc_stages import HEALTH_TIMEOUT_S, GrpcStages
from services.ingestion.server import IngestionServicer
from services.ingestion.sources import IngestSettings, SourceItem


def _addresses(
    engine: dict[str, GrpcServer], ingestion: GrpcServer | None = None
) -> dict[str, str]:
    servers = {**engine, "ingestion": ingestion or engine["ingestion"]}
    return {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}


def _reading(start_stage: Callable[..., GrpcServer], store: ClipStore, *roots: Path) -> GrpcServer:
    """An ingestion service on ``store`` that may read the local files under ``roots``."""
    settings = IngestSettings(allowed_roots=list(roots))
    return start_stage("ingestion", store, servicer=IngestionServicer(settings, store))


def _source(tmp_path: Path, bikes: Path, carphone: Path, bigbuckbunny: Path) -> str:
    rows = [
        {"url": str(bikes), "hashtag": "cycling", "allows_download": True},
        {"url": str(carphone), "hashtag": "talking", "view_count": 5_400_000},
        {"url": str(bigbuckbunny), "hashtag": "cartoon", "description": "no people"},
        {"url": str(tmp_path / "gone.mp4"), "hashtag": "talking"},
    ]
    manifest = tmp_path / "sources.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(manifest)


def _dataset(store: ClipStore, dataset: str) -> dict[str, object]:
    """A run's manifests with store URIs turned into keys, so two stores compare."""

    def lines(name: str) -> list[str]:
        return store.get_lines(ClipStore.manifest_key(dataset, name))

    clips = [json.loads(line) for line in lines("clips.jsonl")]
    return {
        "pretrain": sorted(
            (store.key_from_uri(uri), rest)
            for uri, rest in (line.split(" ", 1) for line in lines("pretrain.csv"))
        ),
        "train": sorted(
            (store.key_from_uri(uri), label)
            for uri, label in (line.split(" ") for line in lines("train.csv"))
        ),
        "labels": store.get_json(ClipStore.manifest_key(dataset, "labels.json")),
        "clips": sorted(
            (
                clip["clip"]["key"],
                clip["source"],
                clip["hashtag"],
                clip["start_frame"],
                clip["end_frame"],
                clip["fps"],
                clip["person_frames"],
                tuple(clip["person_scores"]),
                json.dumps(clip["metadata"], sort_keys=True),
            )
            for clip in clips
        ),
        "review": sorted(
            (line["source"], line["reason"], json.dumps(line["context"], sort_keys=True))
            for line in map(json.loads, lines("review.jsonl"))
        ),
        "rejections": sorted(
            (line["source"], line["stage"], line["reason"])
            for line in map(json.loads, lines("rejections.jsonl"))
        ),
    }


def test_curate_over_grpc_matches_in_process(
    engine: dict[str, GrpcServer],
    start_stage: Callable[..., GrpcServer],
    engine_store: ClipStore,
    local_store: ClipStore,
    tmp_path: Path,
    bikes: Path,
    carphone: Path,
    bigbuckbunny: Path,
) -> None:
    source = _source(tmp_path, bikes, carphone, bigbuckbunny)
    local = curate(
        source, LocalStages(local_store, CurateSettings()), local_store, "parity", progress=False
    )
    ingestion = _reading(start_stage, engine_store, bikes.parent, tmp_path)
    with GrpcStages.from_addresses(_addresses(engine, ingestion), deadline_s=120) as stages:
        remote = curate(source, stages, engine_store, "parity", progress=False)

    expected = _dataset(local_store, "parity")
    assert _dataset(engine_store, "parity") == expected
    assert remote.reasons == local.reasons
    assert (remote.clips_added, remote.clips_total) == (local.clips_added, local.clips_total)
    # What the engine really does with these videos, so the parity above covers every path:
    # carphone is one 4 s scene with a person (a clip); bikes' longest scene is 61 frames at
    # 25 fps, under 3.5 s; the cartoon has too few person frames; a missing file fails ingestion.
    assert [clip[2] for clip in expected["clips"]] == ["talking"]
    assert {
        (Path(source).name, stage, reason) for source, stage, reason in expected["rejections"]
    } >= {
        ("bikes.mp4", "clips", "TOO_SHORT"),
        ("gone.mp4", "ingestion", "SOURCE_NOT_FOUND"),
    }
    # Every clip the manifest names was written by the clips service and reads back verified.
    for key, _ in expected["pretrain"]:
        assert engine_store.get_bytes(key)[4:8] == b"ftyp"
    # Integers in platform metadata survive the trip through the services.
    assert json.loads(expected["clips"][0][-1])["view_count"] == 5_400_000
    # The cartoon lands in the review list with its per-frame scores, from either path.
    [(review_source, reason, context)] = expected["review"]
    assert (Path(review_source).name, reason) == ("bigbuckbunny.mp4", "TOO_FEW_PERSON_FRAMES")
    assert len(json.loads(context)["scores"]) == 10


def test_grpc_stages_raise_the_typed_errors(
    engine: dict[str, GrpcServer],
    start_stage: Callable[..., GrpcServer],
    engine_store: ClipStore,
    tmp_path: Path,
) -> None:
    ingestion = _reading(start_stage, engine_store, tmp_path)
    with (
        GrpcStages.from_addresses(_addresses(engine, ingestion), deadline_s=30) as stages,
        pytest.raises((SourceNotFound, UnreadableVideo)) as caught,
    ):
        stages.ingest(SourceItem(str(tmp_path / "gone.mp4"), "talking", {}))
    assert "gone.mp4" in caught.value.detail


def test_a_dead_service_is_a_retryable_error_naming_it(tmp_path: Path) -> None:
    # A refused connection says nothing about the video: it must not become a rejection.
    addresses = dict.fromkeys(STAGES, "127.0.0.1:9")
    with (
        GrpcStages.from_addresses(addresses, deadline_s=1) as stages,
        pytest.raises((ServiceUnavailable, DeadlineExceeded)) as caught,
    ):
        stages.ingest(SourceItem(str(tmp_path / "a.mp4"), "x", {}))
    assert caught.value.retryable and "ingestion service at 127.0.0.1:9" in caught.value.detail
    assert isinstance(caught.value.__cause__, grpc.RpcError)


def test_a_service_down_mid_run_leaves_its_sources_for_the_next_run(
    engine: dict[str, GrpcServer],
    start_stage: Callable[..., GrpcServer],
    engine_store: ClipStore,
    tmp_path: Path,
    carphone: Path,
) -> None:
    rows = [
        {"url": str(carphone), "hashtag": "talking"},
        {"url": str(tmp_path / "gone.mp4"), "hashtag": "talking"},
    ]
    manifest = tmp_path / "sources.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    addresses = _addresses(engine, _reading(start_stage, engine_store, carphone.parent, tmp_path))
    with GrpcStages.from_addresses({**addresses, "persons": "127.0.0.1:9"}, 2) as stages:
        broken = curate(str(manifest), stages, engine_store, "outage", progress=False)
    (attempt,) = broken.failed
    assert (Path(attempt.source).name, attempt.stage) == ("carphone_pristine.mp4", "persons")
    snapshot = Dataset(engine_store, "outage").snapshot()
    # What the run did before the service failed is kept: the missing file's rejection.
    assert [Path(r.source).name for r in snapshot.rejections] == ["gone.mp4"]
    assert [Path(p.source).name for p in snapshot.pending] == ["carphone_pristine.mp4"]
    with GrpcStages.from_addresses(addresses, 120) as stages:
        healed = curate(str(manifest), stages, engine_store, "outage", progress=False)
    assert not healed.failed and healed.clips == 1
    snapshot = Dataset(engine_store, "outage").snapshot()
    assert [Path(c.source).name for c in snapshot.clips] == ["carphone_pristine.mp4"]
    assert not snapshot.pending and len(snapshot.rejections) == 1


def test_a_service_not_serving_at_the_start_fails_the_run_in_seconds_naming_it(
    engine: dict[str, GrpcServer],
    start_stage: Callable[..., GrpcServer],
    engine_store: ClipStore,
    closed_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    addresses = _addresses(engine)
    stages = build_stages(CurateSettings(), engine_store, addresses, deadline_s=600)
    assert isinstance(stages, GrpcStages)  # every service serves: the run may start
    stages.close()

    # Nothing listens at the persons address: the CLI fails before any source, with the name.
    monkeypatch.setenv("H2A_STORE_ROOT", str(tmp_path / "store"))
    # The command installs its own log handler; the test's come back with these copies.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    services = ",".join(
        f"{name}={address}"
        for name, address in {**addresses, "persons": f"127.0.0.1:{closed_port}"}.items()
    )
    started = time.monotonic()
    result = CliRunner().invoke(
        commands.curate, [str(tmp_path), "--services", services, "--no-progress"]
    )
    assert time.monotonic() - started < HEALTH_TIMEOUT_S + 10  # the deadline is 600 s
    assert result.exit_code == commands.EXIT_RETRY, result.output
    assert f"persons service at 127.0.0.1:{closed_port}" in result.output
    assert "ingestion service" not in result.output

    # A service shutting down, and an address that serves another stage, are named too.
    stopping = start_stage("clips", engine_store)
    stopping.health.enter_graceful_shutdown()
    wrong = {**addresses, "clips": f"127.0.0.1:{stopping.port}", "scenes": addresses["persons"]}
    with pytest.raises(ServiceUnavailable) as caught:
        build_stages(CurateSettings(), engine_store, wrong, deadline_s=600)
    assert f"clips service at 127.0.0.1:{stopping.port} (NOT_SERVING)" in caught.value.detail
    assert f"scenes service at {addresses['persons']} (NOT_FOUND)" in caught.value.detail
    assert caught.value.retryable
