"""Hostile stage requests over real channels: each is refused with INVALID_ARGUMENT and its
typed reason, and the good request next to it is served as before."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from hashtag2action.v1 import (
    clips_pb2,
    clips_pb2_grpc,
    common_pb2,
    persons_pb2,
    persons_pb2_grpc,
    scenes_pb2,
    scenes_pb2_grpc,
)

from services.common.errors import H2AError, InvalidKey, InvalidRequest
from services.common.grpc_runtime import error_from_rpc
from services.common.messages import to_message
from services.common.records import ObjectRef, Segment
from services.common.store import ClipStore, file_sha256
from services.common.video import probe


def _raw(store: ClipStore, video: Path) -> common_pb2.ObjectRef:
    return to_message(
        store.put_file(ClipStore.raw_key(file_sha256(video)), video), common_pb2.ObjectRef
    )


def _refused(call: grpc.UnaryUnaryMultiCallable, request: Message) -> H2AError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    error = error_from_rpc(caught.value)
    assert error is not None
    return error


def test_a_clip_is_filed_only_under_the_video_it_is_cut_from(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, carphone: Path, bikes: Path
) -> None:
    stub = clips_pb2_grpc.ClipEncodingStub(channels["clips"])
    victim = file_sha256(bikes)
    _raw(engine_store, bikes)
    segment = to_message(Segment(0, 120, 30000 / 1001), common_pb2.Segment)
    info = to_message(probe(carphone), common_pb2.VideoInfo)
    planted = clips_pb2.EncodeClipRequest(
        video=_raw(engine_store, carphone), source_id=victim, segment=segment, info=info
    )
    assert isinstance(_refused(stub.EncodeClip, planted), InvalidRequest)
    assert not engine_store.list(ClipStore.clip_prefix(victim))

    # A reference must be a raw video under its own sum: not a clip, not another video's sum.
    own = clips_pb2.EncodeClipRequest(
        video=planted.video, source_id=planted.video.sha256, segment=segment, info=info
    )
    clip = stub.EncodeClip(own, timeout=120).clip
    other_sum = common_pb2.ObjectRef()
    other_sum.CopyFrom(own.video)
    other_sum.sha256 = victim
    for video in (clip, other_sum):
        request = clips_pb2.EncodeClipRequest(
            video=video, source_id=video.sha256, segment=segment, info=info
        )
        assert isinstance(_refused(stub.EncodeClip, request), InvalidRequest)
    assert clip.key == ClipStore.clip_key(own.source_id, 0, 120)
    # A malformed id is still a bad key.
    escape = clips_pb2.EncodeClipRequest(
        video=own.video, source_id="../x", segment=segment, info=info
    )
    assert isinstance(_refused(stub.EncodeClip, escape), InvalidKey)


def test_segments_must_lie_inside_the_video(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, carphone: Path
) -> None:
    video = _raw(engine_store, carphone)  # 120 frames
    info = to_message(probe(carphone), common_pb2.VideoInfo)
    persons = persons_pb2_grpc.PersonDetectionStub(channels["persons"])
    clips = clips_pb2_grpc.ClipEncodingStub(channels["clips"])
    bad = [
        common_pb2.Segment(start_frame=0, end_frame=10**6, fps=25.0),
        common_pb2.Segment(start_frame=100, end_frame=121, fps=25.0),
        common_pb2.Segment(start_frame=30, end_frame=30, fps=25.0),
        common_pb2.Segment(start_frame=0, end_frame=30, fps=math.nan),
        common_pb2.Segment(start_frame=0, end_frame=30, fps=math.inf),
        common_pb2.Segment(),
    ]
    for segment in bad:
        request = persons_pb2.DetectPersonsRequest(video=video, scene=segment)
        assert isinstance(_refused(persons.DetectPersons, request), InvalidRequest), segment
        request = clips_pb2.EncodeClipRequest(
            video=video, source_id=video.sha256, segment=segment, info=info
        )
        assert isinstance(_refused(clips.EncodeClip, request), InvalidRequest), segment
    whole = common_pb2.Segment(start_frame=0, end_frame=120, fps=30000 / 1001)
    result = persons.DetectPersons(
        persons_pb2.DetectPersonsRequest(video=video, scene=whole), timeout=120
    )
    assert result.passed


def test_video_info_must_describe_the_video(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, bikes: Path
) -> None:
    stub = scenes_pb2_grpc.SceneAnalysisStub(channels["scenes"])
    video = _raw(engine_store, bikes)
    info = to_message(probe(bikes), common_pb2.VideoInfo)

    def changed(**fields: float) -> common_pb2.VideoInfo:
        message = common_pb2.VideoInfo()
        message.CopyFrom(info)
        for name, value in fields.items():
            setattr(message, name, value)
        return message

    bad = [
        common_pb2.VideoInfo(),  # every field zero: width divides
        changed(fps=math.nan),
        changed(duration_s=-math.inf),
        changed(width=0),
        changed(height=-272),
        changed(frame_count=0),
        # Positive, but not this video: a made-up size would set the analysis frame size.
        changed(width=1, height=10**9),
        changed(frame_count=10**9),
    ]
    for message in bad:
        request = scenes_pb2.DetectScenesRequest(video=video, info=message)
        assert isinstance(_refused(stub.DetectScenes, request), InvalidRequest), message
    response = stub.DetectScenes(scenes_pb2.DetectScenesRequest(video=video, info=info), timeout=60)
    assert len(response.scenes) == 6

    # The clips stage too: the rotation it would turn the frames by, the size it scales from.
    clips = clips_pb2_grpc.ClipEncodingStub(channels["clips"])
    segment = to_message(Segment(76, 137, 25.0), common_pb2.Segment)
    for message in (changed(rotation=90), changed(width=1280), None):
        request = clips_pb2.EncodeClipRequest(
            video=video, source_id=video.sha256, segment=segment, info=message
        )
        assert isinstance(_refused(clips.EncodeClip, request), InvalidRequest), message
    assert not engine_store.list(ClipStore.clip_prefix(video.sha256))


def test_a_reference_outside_the_raw_layout_is_refused(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, bikes: Path
) -> None:
    stub = scenes_pb2_grpc.SceneAnalysisStub(channels["scenes"])
    info = to_message(probe(bikes), common_pb2.VideoInfo)
    # The right bytes under a key that is not their raw key (a manifest, say).
    elsewhere: ObjectRef = engine_store.put_file(ClipStore.state_key("bikes.mp4"), bikes)
    request = scenes_pb2.DetectScenesRequest(
        video=to_message(elsewhere, common_pb2.ObjectRef), info=info
    )
    assert isinstance(_refused(stub.DetectScenes, request), InvalidRequest)
