from hashtag2action.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SourceItem(_message.Message):
    __slots__ = ("location", "hashtag", "metadata_json")
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    HASHTAG_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    location: str
    hashtag: str
    metadata_json: str
    def __init__(self, location: _Optional[str] = ..., hashtag: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class IngestedVideo(_message.Message):
    __slots__ = ("source_id", "raw", "meta", "info", "item")
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    source_id: str
    raw: _common_pb2.ObjectRef
    meta: _common_pb2.ObjectRef
    info: _common_pb2.VideoInfo
    item: SourceItem
    def __init__(self, source_id: _Optional[str] = ..., raw: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., meta: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., info: _Optional[_Union[_common_pb2.VideoInfo, _Mapping]] = ..., item: _Optional[_Union[SourceItem, _Mapping]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: SourceItem
    def __init__(self, item: _Optional[_Union[SourceItem, _Mapping]] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("video",)
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    video: IngestedVideo
    def __init__(self, video: _Optional[_Union[IngestedVideo, _Mapping]] = ...) -> None: ...
