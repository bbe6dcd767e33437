"""H.264 encoding of a segment into the store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from services.clips.encode import ClipSettings, encode_clip
from services.common.errors import TooLong, TooShort
from services.common.records import Segment
from services.common.signatures import Signature, distance
from services.common.store import ClipStore
from services.common.video import probe


def test_encode_clip_writes_h264_at_short_side(local_store: ClipStore, carphone: Path):
    segment = Segment(10, 115, 29.97)
    source = probe(carphone)
    encoded = encode_clip(carphone, "src123", segment, local_store, ClipSettings(), source)
    ref, media = encoded.clip, encoded.media
    assert ref.key == ClipStore.clip_key("src123", 10, 115)
    with local_store.open_local(ref) as path:
        info = probe(path)
    assert (info.codec, info.short_side, info.frame_count) == ("h264", 320, 105)
    assert info.width == 392  # 176x144 scaled to short side 320, even width
    # The media record is what the file holds, written for strided training reads.
    assert (media.frames, media.width, media.height, media.codec) == (105, 392, 320, "h264")
    assert media.duration_s == pytest.approx(info.duration_s)
    assert media.keyframe_interval <= ClipSettings().keyframe_interval
    assert media.bframes > 0
    # The same request finds the stored clip instead of encoding again.
    again = encode_clip(carphone, "src123", segment, local_store, ClipSettings(), source)
    assert again.clip == ref
    assert replace(again.media, signature="") == replace(media, signature="")
    # Signed from the frames the encoder wrote, then from the stored file: the same clip.
    signatures = [Signature.from_hex(m.signature) for m in (media, again.media)]
    assert distance(*signatures) <= 1


@pytest.mark.parametrize(
    ("bounds", "error"),
    [({"min_seconds": 4.0}, TooShort), ({"max_seconds": 3.0}, TooLong)],
    ids=["too-short", "too-long"],
)
def test_a_clip_outside_the_bounds_is_refused_and_not_stored(
    local_store: ClipStore, carphone: Path, bounds: dict[str, float], error: type
):
    segment = Segment(10, 115, 29.97)  # 105 frames: 3.50 s of source time
    settings = ClipSettings(**bounds)
    with pytest.raises(error) as caught:
        encode_clip(carphone, "src123", segment, local_store, settings, probe(carphone))
    assert caught.value.grpc_status == "FAILED_PRECONDITION"
    assert caught.value.context["duration_s"] == pytest.approx(3.5, abs=0.01)
    assert not local_store.exists(ClipStore.clip_key("src123", 10, 115))
