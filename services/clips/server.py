"""The ClipEncoding gRPC service: ``encode_clip`` behind a stub; the clip lands in the store.

A clip is filed under ``clips/{source_id}/``, and one already there is reused: so the request's
``source_id`` must be the sha256 of the video it references, or a caller could cut any video
and file the clip under another one's id. The request's ``VideoInfo`` (the driver's probe
record) must describe that video as probed here: its rotation and size shape the clip.
"""

from __future__ import annotations

import grpc
from hashtag2action.v1 import clips_pb2, clips_pb2_grpc, common_pb2
from pydantic import Field

from services.clips.encode import ClipSettings, encode_clip
from services.common.errors import InvalidRequest
from services.common.grpc_runtime import ServiceSettings, serve
from services.common.messages import (
    check_info,
    check_segment,
    from_message,
    require,
    source_video,
    to_message,
)
from services.common.records import Segment
from services.common.store import ClipStore
from services.common.video import VideoInfo, probe

__all__ = ["SERVICE", "ClipsServer", "ClipsServicer", "main"]

SERVICE = clips_pb2.DESCRIPTOR.services_by_name["ClipEncoding"]


class ClipsServer(ServiceSettings):
    """Settings of the clips service: the shared sections plus ``H2A_CLIPS_*``."""

    clips: ClipSettings = Field(default_factory=ClipSettings)


class ClipsServicer(clips_pb2_grpc.ClipEncodingServicer):
    def __init__(self, settings: ClipSettings, store: ClipStore) -> None:
        self._settings = settings
        self._store = store

    def EncodeClip(
        self, request: clips_pb2.EncodeClipRequest, context: grpc.ServicerContext
    ) -> clips_pb2.EncodeClipResponse:
        require(request, "video", "segment", "info")
        claimed = from_message(request.info, VideoInfo)
        segment = from_message(request.segment, Segment)
        ref = source_video(request.video, self._store)
        ClipStore.clip_prefix(request.source_id)  # an id that cannot name a folder: InvalidKey
        if request.source_id != ref.sha256:
            raise InvalidRequest(
                f"source_id {request.source_id!r} is not the id of the referenced video "
                f"{ref.sha256!r}"
            )
        with self._store.open_local(ref) as path:
            info = probe(path)
            check_info(claimed, info)
            check_segment(segment, info)
            encoded = encode_clip(path, ref.sha256, segment, self._store, self._settings, info)
        return clips_pb2.EncodeClipResponse(
            clip=to_message(encoded.clip, common_pb2.ObjectRef),
            media=to_message(encoded.media, clips_pb2.ClipMedia),
        )


def main() -> None:
    settings = ClipsServer()
    servicer = ClipsServicer(settings.clips, ClipStore.from_settings(settings.store))
    serve(servicer, clips_pb2_grpc.add_ClipEncodingServicer_to_server, SERVICE, settings)
