"""Ingestion over a real channel: the in-process record round-trips, failures keep reasons."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hashtag2action.v1 import ingestion_pb2, ingestion_pb2_grpc

from services.common.errors import H2AError, InvalidRequest, SourceNotFound, UnreadableVideo
from services.common.grpc_runtime import error_from_rpc
from services.common.store import ClipStore, file_sha256
from services.ingestion.server import item_to_proto, video_from_proto
from services.ingestion.sources import IngestSettings, SourceItem, ingest


def _ingest(channel: grpc.Channel, item: ingestion_pb2.SourceItem) -> ingestion_pb2.IngestResponse:
    stub = ingestion_pb2_grpc.IngestionStub(channel)
    return stub.Ingest(ingestion_pb2.IngestRequest(item=item), timeout=60)


def test_ingested_record_round_trips(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, carphone: Path
) -> None:
    item = SourceItem(
        str(carphone), "talking", {"view_count": 5_400_000, "allows_download": True, "rule": 3}
    )
    video = video_from_proto(_ingest(channels["ingestion"], item_to_proto(item)).video)

    assert video == ingest(item, engine_store, IngestSettings())
    assert video.source_id == file_sha256(carphone)
    assert engine_store.stat(video.raw.key) == video.raw
    assert engine_store.get_json(video.meta.key)["metadata"]["view_count"] == 5_400_000


def _failure(channel: grpc.Channel, item: ingestion_pb2.SourceItem) -> H2AError:
    with pytest.raises(grpc.RpcError) as caught:
        _ingest(channel, item)
    error = error_from_rpc(caught.value)
    assert error is not None
    assert caught.value.code().name == error.grpc_status
    return error


def test_failures_keep_their_reason(channels: dict[str, grpc.Channel], tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    channel = channels["ingestion"]

    missing = _failure(channel, item_to_proto(SourceItem(str(tmp_path / "gone.mp4"), "x", {})))
    assert isinstance(missing, SourceNotFound) and "gone.mp4" in missing.detail
    assert isinstance(
        _failure(channel, item_to_proto(SourceItem(str(text), "x", {}))), UnreadableVideo
    )
    bad_metadata = ingestion_pb2.SourceItem(location=str(text), hashtag="x", metadata_json="[1")
    assert isinstance(_failure(channel, bad_metadata), InvalidRequest)
