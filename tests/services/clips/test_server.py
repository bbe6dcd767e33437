"""ClipEncoding over a real channel writes the clip into the shared store, once."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hashtag2action.v1 import clips_pb2, clips_pb2_grpc, common_pb2

from services.clips.encode import ClipSettings
from services.common.errors import InvalidKey
from services.common.grpc_runtime import error_from_rpc
from services.common.messages import from_message, to_message
from services.common.records import ObjectRef, Segment
from services.common.store import ClipStore, file_sha256
from services.common.video import probe


def test_clip_lands_in_the_store_under_its_key(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, carphone: Path
) -> None:
    source_id = file_sha256(carphone)
    raw = engine_store.put_file(ClipStore.raw_key(source_id), carphone)
    request = clips_pb2.EncodeClipRequest(
        video=to_message(raw, common_pb2.ObjectRef),
        source_id=source_id,
        segment=to_message(Segment(10, 115, 30000 / 1001), common_pb2.Segment),
        info=to_message(probe(carphone), common_pb2.VideoInfo),
    )
    stub = clips_pb2_grpc.ClipEncodingStub(channels["clips"])
    clip = from_message(stub.EncodeClip(request, timeout=120).clip, ObjectRef)

    assert clip.key == ClipStore.clip_key(source_id, 10, 115)
    assert clip.uri == engine_store.uri(clip.key)
    with engine_store.open_local(clip) as path:
        info = probe(path)
    assert (info.codec, info.frame_count, info.short_side) == (
        "h264",
        105,
        ClipSettings().short_side,
    )
    # The same request names the same clip: answered from the store, nothing re-encoded.
    assert from_message(stub.EncodeClip(request, timeout=120).clip, ObjectRef) == clip


def test_a_source_id_that_is_not_a_key_is_refused(
    channels: dict[str, grpc.Channel], engine_store: ClipStore, carphone: Path
) -> None:
    raw = engine_store.put_file(ClipStore.raw_key(file_sha256(carphone)), carphone)
    stub = clips_pb2_grpc.ClipEncodingStub(channels["clips"])
    with pytest.raises(grpc.RpcError) as caught:
        stub.EncodeClip(
            clips_pb2.EncodeClipRequest(
                video=to_message(raw, common_pb2.ObjectRef),
                source_id="../../escape",
                segment=to_message(Segment(0, 30, 25.0), common_pb2.Segment),
                info=to_message(probe(carphone), common_pb2.VideoInfo),
            ),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error_from_rpc(caught.value), InvalidKey)
