from hashtag2action.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetectScenesRequest(_message.Message):
    __slots__ = ("video", "info")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    video: _common_pb2.ObjectRef
    info: _common_pb2.VideoInfo
    def __init__(self, video: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., info: _Optional[_Union[_common_pb2.VideoInfo, _Mapping]] = ...) -> None: ...

class DetectScenesResponse(_message.Message):
    __slots__ = ("scenes", "longest_index", "keyframes")
    SCENES_FIELD_NUMBER: _ClassVar[int]
    LONGEST_INDEX_FIELD_NUMBER: _ClassVar[int]
    KEYFRAMES_FIELD_NUMBER: _ClassVar[int]
    scenes: _containers.RepeatedCompositeFieldContainer[_common_pb2.Segment]
    longest_index: int
    keyframes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, scenes: _Optional[_Iterable[_Union[_common_pb2.Segment, _Mapping]]] = ..., longest_index: _Optional[int] = ..., keyframes: _Optional[_Iterable[int]] = ...) -> None: ...
