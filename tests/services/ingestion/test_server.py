"""Ingestion over a real channel: the in-process record round-trips, failures keep reasons.

The engine's ingestion service reads no local file (no allowed roots, the default); these tests
start one that may read the folders they use."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from hashtag2action.v1 import ingestion_pb2, ingestion_pb2_grpc

from services.common.errors import (
    FrameTooLarge,
    H2AError,
    InvalidRequest,
    InvalidSource,
    SourceNotAllowed,
    SourceNotFound,
    UnreadableVideo,
)
from services.common.grpc_runtime import error_from_rpc
from services.common.store import ClipStore, file_sha256
from services.ingestion.server import item_to_proto, video_from_proto
from services.ingestion.sources import IngestSettings, SourceItem, ingest

Reading = Callable[..., grpc.Channel]


def _ingest(channel: grpc.Channel, item: ingestion_pb2.SourceItem) -> ingestion_pb2.IngestResponse:
    stub = ingestion_pb2_grpc.IngestionStub(channel)
    return stub.Ingest(ingestion_pb2.IngestRequest(item=item), timeout=60)


def test_ingested_record_round_trips(
    reading: Reading, engine_store: ClipStore, carphone: Path
) -> None:
    item = SourceItem(
        str(carphone), "talking", {"view_count": 5_400_000, "allows_download": True, "rule": 3}
    )
    video = video_from_proto(_ingest(reading(carphone.parent), item_to_proto(item)).video)

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


def test_failures_keep_their_reason(reading: Reading, tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    channel = reading(tmp_path)

    missing = _failure(channel, item_to_proto(SourceItem(str(tmp_path / "gone.mp4"), "x", {})))
    assert isinstance(missing, SourceNotFound) and "gone.mp4" in missing.detail
    assert isinstance(
        _failure(channel, item_to_proto(SourceItem(str(text), "x", {}))), UnreadableVideo
    )
    bad_metadata = ingestion_pb2.SourceItem(location=str(text), hashtag="x", metadata_json="[1")
    assert isinstance(_failure(channel, bad_metadata), InvalidRequest)


def test_remote_callers_read_local_files_only_under_the_allowed_roots(
    reading: Reading, channels: dict[str, grpc.Channel], tmp_path: Path, carphone: Path
) -> None:
    allowed = tmp_path / "videos"
    allowed.mkdir()
    shutil.copy(carphone, allowed / "talking.mp4")
    (allowed / "escape.mp4").symlink_to(carphone)
    channel = reading(allowed)

    video = video_from_proto(
        _ingest(channel, item_to_proto(SourceItem(str(allowed / "talking.mp4"), "talking"))).video
    )
    assert video.source_id == file_sha256(carphone)
    outside = [
        "/etc/passwd",  # exists
        "/etc/no-such-file.mp4",  # does not: the same answer, so nothing is learnt
        str(carphone),
        f"file://{carphone}",
        str(allowed / "escape.mp4"),  # a link under the root to a file outside it
        "relative.mp4",  # relative to the service's working folder
    ]
    for location in outside:
        refused = _failure(channel, item_to_proto(SourceItem(location, "talking")))
        assert isinstance(refused, SourceNotAllowed), location
        assert refused.grpc_status == "PERMISSION_DENIED"
    # The default service reads no local file at all.
    assert isinstance(
        _failure(channels["ingestion"], item_to_proto(SourceItem(str(carphone), "talking"))),
        SourceNotAllowed,
    )


def test_hostile_items_are_invalid_arguments(
    reading: Reading, tmp_path: Path, carphone: Path
) -> None:
    channel = reading(carphone.parent)
    good = item_to_proto(SourceItem(str(carphone), "talking", {"view_count": 3}))

    def nested(depth: int) -> str:
        return json.dumps({"a": 1} if depth == 0 else {"a": json.loads(nested(depth - 1))})

    bad_metadata = [
        "[" * 100_000,  # the parser's recursion limit
        nested(9),
        json.dumps({"description": "x" * 100_000}),
    ]
    for metadata_json in bad_metadata:
        item = ingestion_pb2.SourceItem(
            location=good.location, hashtag="x", metadata_json=metadata_json
        )
        assert isinstance(_failure(channel, item), InvalidRequest)
    assert video_from_proto(
        _ingest(
            channel,
            ingestion_pb2.SourceItem(location=good.location, hashtag="x", metadata_json=nested(6)),
        ).video
    ).item.metadata["a"]["a"]

    # Inputs tens of KB long are refused with a short detail, and the reply itself arrives.
    for item in (
        ingestion_pb2.SourceItem(location=good.location, hashtag="#" + "é" * 20_000),
        ingestion_pb2.SourceItem(location="/" + "é" * 20_000 + ".mp4", hashtag="x"),
    ):
        refused = _failure(channel, item)
        assert isinstance(refused, InvalidSource)
        assert len(refused.detail) < 1000
    assert video_from_proto(_ingest(channel, good).video).source_id == file_sha256(carphone)


def test_a_decompression_bomb_is_refused_before_decoding(
    reading: Reading, engine_store: ClipStore, image_bomb: Path
) -> None:
    refused = _failure(reading(image_bomb.parent), item_to_proto(SourceItem(str(image_bomb), "x")))
    assert isinstance(refused, FrameTooLarge) and refused.grpc_status == "INVALID_ARGUMENT"
    assert not engine_store.exists(ClipStore.raw_key(file_sha256(image_bomb)))
