"""Segment choice: 3.5-10 s of the chosen scene, the window with the most person frames."""

from __future__ import annotations

import pytest

from services.clips.encode import ClipSettings
from services.common.errors import TooShort
from services.common.records import Segment
from services.curation.segment import choose_segment
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
