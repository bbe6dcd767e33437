"""The Ingestion gRPC service: ``ingest`` behind a stub, and the conversions of its messages.

``GrpcStages`` uses the same conversions on the client side, so a record survives the round
trip exactly (metadata travels as JSON, which keeps integers integers).
"""

from __future__ import annotations

import json

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


class IngestionServer(ServiceSettings):
    """Settings of the ingestion service: the shared sections plus ``H2A_INGEST_*``."""

    ingest: IngestSettings = Field(default_factory=IngestSettings)


def item_to_proto(item: SourceItem) -> ingestion_pb2.SourceItem:
    return ingestion_pb2.SourceItem(
        location=item.location,
        hashtag=item.hashtag,
        metadata_json=json.dumps(item.metadata, sort_keys=True, default=str),
    )


def item_from_proto(message: ingestion_pb2.SourceItem) -> SourceItem:
    try:
        metadata = json.loads(message.metadata_json) if message.metadata_json else {}
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"SourceItem.metadata_json is not JSON: {error}") from error
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
        video = ingest(item_from_proto(request.item), self._store, self._settings)
        return ingestion_pb2.IngestResponse(video=video_to_proto(video))


def main() -> None:
    settings = IngestionServer()
    servicer = IngestionServicer(settings.ingest, ClipStore.from_settings(settings.store))
    serve(servicer, ingestion_pb2_grpc.add_IngestionServicer_to_server, SERVICE, settings)
