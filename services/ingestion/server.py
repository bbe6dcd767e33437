"""The Ingestion gRPC service: ``ingest`` behind a stub, and the conversions of its messages.

``GrpcStages`` uses the same conversions on the client side, so a record survives the round
trip exactly (metadata travels as JSON, which keeps integers integers). Items come from remote
callers: ``ingest`` reads their local paths only under ``H2A_INGEST_ALLOWED_ROOTS``.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from hashtag2action.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc
from pydantic import Field

from services.common.errors import InvalidRequest
from services.common.grpc_runtime import ServiceSettings, serve
from services.common.messages import from_message, require, to_message
from services.common.records import ObjectRef
from services.common.store import ClipStore
from services.common.video import VideoInfo
from services.ingestion.sources import IngestedVideo, IngestSettings, SourceItem, ingest

__all__ = [
    "SERVICE",
    "IngestionServer",
    "IngestionServicer",
    "item_from_proto",
    "item_to_proto",
    "main",
    "video_from_proto",
    "video_to_proto",
]

SERVICE = ingestion_pb2.DESCRIPTOR.services_by_name["Ingestion"]

# Platform metadata is a few flat fields (a description at most a few KB long); it is copied
# into every record of the source.
_MAX_METADATA_BYTES = 64 * 1024
_MAX_METADATA_DEPTH = 8


class IngestionServer(ServiceSettings):
    """Settings of the ingestion service: the shared sections plus ``H2A_INGEST_*``."""

    ingest: IngestSettings = Field(default_factory=IngestSettings)


def item_to_proto(item: SourceItem) -> ingestion_pb2.SourceItem:
    return ingestion_pb2.SourceItem(
        location=item.location,
        hashtag=item.hashtag,
        metadata_json=json.dumps(item.metadata, sort_keys=True, default=str),
    )


def _depth(value: Any) -> int:
    """How many levels of JSON containers ``value`` nests (0 for a scalar), counted level by
    level rather than by recursion."""
    depth, level = 0, [value]
    while level := [node for node in level if isinstance(node, dict | list)]:
        depth += 1
        level = [
            child for node in level for child in (node.values() if isinstance(node, dict) else node)
        ]
    return depth


def item_from_proto(message: ingestion_pb2.SourceItem) -> SourceItem:
    size = len(message.metadata_json.encode())
    if size > _MAX_METADATA_BYTES:
        raise InvalidRequest(
            f"SourceItem.metadata_json holds {size} bytes, over {_MAX_METADATA_BYTES}"
        )
    metadata: Any = {}
    try:
        if message.metadata_json:
            metadata = json.loads(message.metadata_json)
        too_deep = _depth(metadata) > _MAX_METADATA_DEPTH
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"SourceItem.metadata_json is not JSON: {error}") from error
    except RecursionError:  # the parser recurses once per level: far past the limit
        too_deep = True
    if too_deep:
        raise InvalidRequest(
            f"SourceItem.metadata_json nests deeper than {_MAX_METADATA_DEPTH} levels"
        )
    if not isinstance(metadata, dict):
        raise InvalidRequest("SourceItem.metadata_json is not a JSON object")
    return SourceItem(location=message.location, hashtag=message.hashtag, metadata=metadata)


def video_to_proto(video: IngestedVideo) -> ingestion_pb2.IngestedVideo:
    return ingestion_pb2.IngestedVideo(
        source_id=video.source_id,
        raw=to_message(video.raw, common_pb2.ObjectRef),
        meta=to_message(video.meta, common_pb2.ObjectRef),
        info=to_message(video.info, common_pb2.VideoInfo),
        item=item_to_proto(video.item),
    )


def video_from_proto(message: ingestion_pb2.IngestedVideo) -> IngestedVideo:
    return IngestedVideo(
        source_id=message.source_id,
        raw=from_message(message.raw, ObjectRef),
        meta=from_message(message.meta, ObjectRef),
        info=from_message(message.info, VideoInfo),
        item=item_from_proto(message.item),
    )


class IngestionServicer(ingestion_pb2_grpc.IngestionServicer):
    def __init__(self, settings: IngestSettings, store: ClipStore) -> None:
        self._settings = settings
        self._store = store

    def Ingest(
        self, request: ingestion_pb2.IngestRequest, context: grpc.ServicerContext
    ) -> ingestion_pb2.IngestResponse:
        require(request, "item")
        video = ingest(item_from_proto(request.item), self._store, self._settings, remote=True)
        return ingestion_pb2.IngestResponse(video=video_to_proto(video))


def main() -> None:
    settings = IngestionServer()
    servicer = IngestionServicer(settings.ingest, ClipStore.from_settings(settings.store))
    serve(servicer, ingestion_pb2_grpc.add_IngestionServicer_to_server, SERVICE, settings)
