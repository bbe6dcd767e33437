from hashtag2action.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetectPersonsRequest(_message.Message):
    __slots__ = ("video", "scene")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SCENE_FIELD_NUMBER: _ClassVar[int]
    video: _common_pb2.ObjectRef
    scene: _common_pb2.Segment
    def __init__(self, video: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., scene: _Optional[_Union[_common_pb2.Segment, _Mapping]] = ...) -> None: ...

class DetectPersonsResponse(_message.Message):
    __slots__ = ("frame_indices", "scores", "positive_frames", "passed")
    FRAME_INDICES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    frame_indices: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    positive_frames: int
    passed: bool
    def __init__(self, frame_indices: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., positive_frames: _Optional[int] = ..., passed: bool = ...) -> None: ...
