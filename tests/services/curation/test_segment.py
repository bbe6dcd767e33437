"""Segment choice: 3.5-10 s of the chosen scene, the window with the most person frames."""

from __future__ import annotations

import pytest

from services.clips.encode import ClipSettings
from services.common.errors import TooShort
from services.common.records import Segment
from services.curation.segment import choose_segment, usable_scene, whole_scene
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


def test_a_scene_is_used_from_a_keyframe_just_after_its_start():
    """x264 may put a cut's keyframe a frame or two late (the benchmark's TikTok-shaped video:
    cut at 192, keyframe at 194): the clip starts there and decodes from there."""
    scene = Segment(192, 342, 30.0)  # 5 s
    keyframes = (0, 30, 194, 327)
    assert usable_scene(scene, keyframes, ClipSettings()) == Segment(194, 342, 30.0)
    # A keyframe on the scene's first frame keeps it whole.
    assert usable_scene(scene, (0, 192), ClipSettings()) == scene


def test_a_scene_stays_whole_when_the_keyframe_is_late_or_the_rest_too_short():
    scene = Segment(192, 342, 30.0)
    # 16 frames in: beyond the 0.5 s slack.
    assert usable_scene(scene, (30, 208), ClipSettings()) == scene
    # From the keyframe, 3.43 s would be left: under min_seconds.
    short = Segment(100, 210, 30.0)  # 3.67 s
    assert usable_scene(short, (0, 107), ClipSettings()) == short
    # Slack 0 never moves a start; no keyframe after the start neither.
    assert usable_scene(scene, (30, 194), ClipSettings(keyframe_slack_s=0)) == scene
    assert usable_scene(scene, (0, 30), ClipSettings()) == scene


def test_whole_scene_is_what_choose_segment_takes_whatever_the_detector_finds():
    settings = ClipSettings()
    found = PersonResult((10, 60), (0.9, 0.0), 1, False)
    for scene, whole in [
        (Segment(0, 100, 30.0), False),  # 3.33 s: too short for a clip
        (Segment(0, 120, 30.0), True),
        (Segment(0, 300, 30.0), True),  # exactly 10 s
        (Segment(0, 301, 30.0), False),
    ]:
        assert whole_scene(scene, settings) is whole
        if whole:
            assert choose_segment(scene, found, settings) == scene
