"""Conversions between the shared records and their ``common.proto`` messages.

``ObjectRef``, ``Segment`` and ``VideoInfo`` are flat and their message fields carry the same
names, so one pair of functions converts all three; a field added to a record without its proto
field fails here, loudly. Stage-specific messages are converted next to their servicer.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

from google.protobuf.message import Message
from hashtag2action.v1 import common_pb2

from services.common.errors import InvalidKey, InvalidRequest
from services.common.records import ObjectRef
from services.common.store import ClipStore

__all__ = ["from_message", "require", "stored_ref", "to_message"]

_Record = TypeVar("_Record")
_Message = TypeVar("_Message", bound=Message)


def to_message(record: Any, message_type: type[_Message]) -> _Message:
    """A flat frozen record as the message of the same shape."""
    return message_type(**asdict(record))


def from_message(message: Message, record_type: type[_Record]) -> _Record:
    """A message as its record; records validate themselves, so a bad field is InvalidRequest."""
    values = {field.name: getattr(message, field.name) for field in fields(record_type)}  # type: ignore[arg-type]
    try:
        return record_type(**values)
    except ValueError as error:
        raise InvalidRequest(f"{message.DESCRIPTOR.name}: {error}") from error


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
