"""Segment choice (3.5-10 s, the most person frames) and H.264 encoding into the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.clips.encode import ClipSettings, choose_segment, encode_clip
from services.common.errors import TooShort
from services.common.records import Segment
from services.common.store import ClipStore
from services.common.video import probe
from services.persons.detect import PersonResult

NOBODY = PersonResult((), (), 0, False)


def test_short_scene_is_rejected():
    with pytest.raises(TooShort):
        choose_segment(Segment(76, 137, 25.0), NOBODY, ClipSettings())  # 2.44 s


def test_scene_within_bounds_is_kept_whole():
    scene = Segment(0, 120, 30.0)
    assert choose_segment(scene, NOBODY, ClipSettings()) == scene


def test_long_scene_takes_the_window_with_most_person_frames():
    scene = Segment(0, 750, 25.0)  # 30 s
    indices = tuple(range(37, 750, 75))  # 10 samples
    scores = (0.0, 0.0, 0.0, 0.0, 0.9, 0.8, 0.9, 0.7, 0.0, 0.0)  # persons at 337..562
    chosen = choose_segment(scene, PersonResult(indices, scores, 4, False), ClipSettings())
    assert chosen.num_frames == 250
    covered = [
        i
        for i, s in zip(indices, scores, strict=True)
        if s and chosen.start_frame <= i < chosen.end_frame
    ]
    assert len(covered) == 4
    assert scene.start_frame <= chosen.start_frame and chosen.end_frame <= scene.end_frame
    # Without any person the window starts with the scene.
    assert choose_segment(scene, NOBODY, ClipSettings()).start_frame == 0


def test_encode_clip_writes_h264_at_short_side(local_store: ClipStore, carphone: Path):
    segment = Segment(10, 115, 29.97)
    ref = encode_clip(carphone, "src123", segment, local_store, ClipSettings())
    assert ref.key == ClipStore.clip_key("src123", 10, 115)
    with local_store.open_local(ref) as path:
        info = probe(path)
    assert (info.codec, info.short_side, info.frame_count) == ("h264", 320, 105)
    assert info.width == 392  # 176x144 scaled to short side 320, even width
    # The same request finds the stored clip instead of encoding again.
    assert encode_clip(carphone, "src123", segment, local_store, ClipSettings()) == ref
