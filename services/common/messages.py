"""Conversions between the shared records and their ``common.proto`` messages, checked at the edge.

``ObjectRef``, ``Segment`` and ``VideoInfo`` are flat and their message fields carry the same
names, so one pair of functions converts all three; a field added to a record without its proto
field fails here, loudly. A request's numbers are refused here, as ``InvalidRequest``, when no
video can have them (NaN, a zero frame rate, a segment past the video's end), before they reach
code that would divide by them. Stage-specific messages are converted next to their servicer.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, fields
from pathlib import PurePosixPath
from typing import Any, TypeVar

from google.protobuf.message import Message
from hashtag2action.v1 import common_pb2

from services.common.errors import InvalidKey, InvalidRequest
from services.common.records import ObjectRef, Segment
from services.common.store import ClipStore
from services.common.video import VideoInfo

__all__ = [
    "check_info",
    "check_segment",
    "from_message",
    "require",
    "source_video",
    "stored_ref",
    "to_message",
]

_Record = TypeVar("_Record")
_Message = TypeVar("_Message", bound=Message)

# Fields that must be positive, of records that do not check their own values.
_POSITIVE: dict[type, tuple[str, ...]] = {
    VideoInfo: ("width", "height", "fps", "frame_count", "duration_s", "size_bytes"),
}
_SHA256 = re.compile(r"[0-9a-f]{64}")
# What the stages read from a request's VideoInfo: the frames' size, rate, count and turn.
_MEASURED = ("width", "height", "fps", "frame_count", "rotation")


def to_message(record: Any, message_type: type[_Message]) -> _Message:
    """A flat frozen record as the message of the same shape."""
    return message_type(**asdict(record))


def from_message(message: Message, record_type: type[_Record]) -> _Record:
    """A message as its record; a bad field is InvalidRequest.

    Records check their own ranges (a segment's end before its start); every float must also be
    finite, and the fields ``_POSITIVE`` names positive.
    """
    name = message.DESCRIPTOR.name
    values = {field.name: getattr(message, field.name) for field in fields(record_type)}  # type: ignore[arg-type]
    for field_name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(f"{name}.{field_name} is {value}, not a finite number")
    for field_name in _POSITIVE.get(record_type, ()):
        if values[field_name] <= 0:
            raise InvalidRequest(f"{name}.{field_name} is {values[field_name]}, not positive")
    try:
        return record_type(**values)
    except ValueError as error:
        raise InvalidRequest(f"{name}: {error}") from error


def require(request: Message, *names: str) -> None:
    """Refuse a request that leaves one of the named message fields unset."""
    missing = [name for name in names if not request.HasField(name)]
    if missing:
        raise InvalidRequest(f"{request.DESCRIPTOR.name} lacks {', '.join(missing)}")


def stored_ref(message: common_pb2.ObjectRef, store: ClipStore) -> ObjectRef:
    """The reference in a request, checked to name an object of this server's store.

    A mismatch means client and server were configured with different stores; failing here
    says so, where reading the key from the wrong store would report a missing object.
    """
    ref = from_message(message, ObjectRef)
    if store.key_from_uri(ref.uri) != ref.key:
        raise InvalidKey(f"uri {ref.uri!r} does not name key {ref.key!r}", key=ref.key)
    return ref


def source_video(message: common_pb2.ObjectRef, store: ClipStore) -> ObjectRef:
    """The source video a stage request references, checked to be a raw object as ingestion
    stores it: under ``ClipStore.raw_key`` of its own sha256.

    Any other object (a clip, a manifest, a key with another video's sum) is InvalidRequest;
    ``ClipStore.open_local`` then verifies the bytes against that sum, so a reference that
    passes names exactly the ingested video whose id is its ``sha256``.
    """
    ref = stored_ref(message, store)
    suffix = PurePosixPath(ref.key).suffix
    if not _SHA256.fullmatch(ref.sha256) or ref.key != ClipStore.raw_key(ref.sha256, suffix):
        raise InvalidRequest(
            f"{ref.key!r} is not a source video stored under its sha256 {ref.sha256!r}",
            key=ref.key,
        )
    return ref


def check_info(info: VideoInfo, probed: VideoInfo) -> None:
    """Refuse a request's ``VideoInfo`` that does not describe the video as probed here: its
    size and rate set the frames a stage makes, so a made-up one could ask for any size."""
    wrong = [name for name in _MEASURED if getattr(info, name) != getattr(probed, name)]
    if wrong:
        raise InvalidRequest(
            "VideoInfo does not describe the referenced video: "
            + ", ".join(
                f"{name} {getattr(info, name)} (probed {getattr(probed, name)})" for name in wrong
            )
        )


def check_segment(segment: Segment, info: VideoInfo) -> None:
    """Refuse a segment that holds no frame or runs past the end of the video ``info`` probes."""
    if segment.num_frames == 0 or segment.end_frame > info.frame_count:
        raise InvalidRequest(
            f"segment [{segment.start_frame}, {segment.end_frame}) is not a non-empty range of "
            f"the video's {info.frame_count} frames"
        )
