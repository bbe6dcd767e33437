from hashtag2action.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeClipRequest(_message.Message):
    __slots__ = ("video", "source_id", "segment")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    video: _common_pb2.ObjectRef
    source_id: str
    segment: _common_pb2.Segment
    def __init__(self, video: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., source_id: _Optional[str] = ..., segment: _Optional[_Union[_common_pb2.Segment, _Mapping]] = ...) -> None: ...

class EncodeClipResponse(_message.Message):
    __slots__ = ("clip",)
    CLIP_FIELD_NUMBER: _ClassVar[int]
    clip: _common_pb2.ObjectRef
    def __init__(self, clip: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...
