from hashtag2action.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeClipRequest(_message.Message):
    __slots__ = ("video", "source_id", "segment", "info")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    video: _common_pb2.ObjectRef
    source_id: str
    segment: _common_pb2.Segment
    info: _common_pb2.VideoInfo
    def __init__(self, video: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., source_id: _Optional[str] = ..., segment: _Optional[_Union[_common_pb2.Segment, _Mapping]] = ..., info: _Optional[_Union[_common_pb2.VideoInfo, _Mapping]] = ...) -> None: ...

class EncodeClipResponse(_message.Message):
    __slots__ = ("clip", "media")
    CLIP_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    clip: _common_pb2.ObjectRef
    media: ClipMedia
    def __init__(self, clip: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., media: _Optional[_Union[ClipMedia, _Mapping]] = ...) -> None: ...

class ClipMedia(_message.Message):
    __slots__ = ("frames", "fps", "duration_s", "width", "height", "codec", "keyframe_interval", "bframes", "signature")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    KEYFRAME_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BFRAMES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    codec: str
    keyframe_interval: int
    bframes: int
    signature: str
    def __init__(self, frames: _Optional[int] = ..., fps: _Optional[float] = ..., duration_s: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., codec: _Optional[str] = ..., keyframe_interval: _Optional[int] = ..., bframes: _Optional[int] = ..., signature: _Optional[str] = ...) -> None: ...
