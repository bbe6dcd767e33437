"""Which part of the chosen scene becomes the clip: the driver's decision, made on the person
detector's scores.

The paper keeps at least 3.5 s so a whole action fits, and from a longer video the 10-second
segment with the most significant action; here "most significant" is measured by the person
detector: the window holding the most person-positive sampled frames. A scene starting just
before a keyframe of the source is used from that keyframe (``usable_scene``), so that reading
it does not decode from the keyframe before.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from services.clips.encode import ClipSettings
from services.common.errors import TooShort
from services.common.records import Segment
from services.persons.detect import PersonResult

__all__ = ["choose_segment", "usable_scene", "whole_scene"]


def usable_scene(scene: Segment, keyframes: Sequence[int], settings: ClipSettings) -> Segment:
    """The part of ``scene`` the clip comes from: from the source's first keyframe within
    ``keyframe_slack_s`` of the scene's start, when one is there and the rest still lasts
    ``min_seconds``; otherwise the whole scene.

    A decode starts at a keyframe: a clip starting a few frames before one (x264 places them
    near cuts, not always on them) would decode from the keyframe before the scene.
    """
    slack = int(settings.keyframe_slack_s * scene.fps)
    position = bisect.bisect_left(keyframes, scene.start_frame)
    if position == len(keyframes) or keyframes[position] - scene.start_frame > slack:
        return scene
    trimmed = Segment(keyframes[position], scene.end_frame, scene.fps)
    return trimmed if _long_enough(trimmed, settings) else scene


def whole_scene(scene: Segment, settings: ClipSettings) -> bool:
    """Whether ``choose_segment`` takes all of ``scene``, whatever the detector finds: it lasts
    ``min_seconds`` to ``max_seconds``."""
    return _long_enough(scene, settings) and scene.num_frames <= _window(scene, settings)


def _long_enough(segment: Segment, settings: ClipSettings) -> bool:
    """Whether ``segment`` lasts ``min_seconds`` (up to float rounding of its duration)."""
    return segment.duration_s + 1e-9 >= settings.min_seconds


def _window(scene: Segment, settings: ClipSettings) -> int:
    return max(1, int(settings.max_seconds * scene.fps))


def choose_segment(scene: Segment, persons: PersonResult, settings: ClipSettings) -> Segment:
    """The part of ``scene`` that becomes the clip.

    Args:
        scene: the chosen (longest) scene, as ``usable_scene`` leaves it.
        persons: detector scores on frames sampled inside it.
        settings: the length bounds.

    Returns:
        The whole scene when it lasts at most ``max_seconds`` (``whole_scene``); otherwise the
        ``max_seconds`` window with the most person-positive sampled frames (ties: the higher
        score sum, then the earliest).

    Raises:
        TooShort: the scene lasts less than ``min_seconds``.
    """
    if not _long_enough(scene, settings):
        raise TooShort(
            f"longest scene lasts {scene.duration_s:.2f} s, below {settings.min_seconds} s",
            duration_s=round(scene.duration_s, 3),
        )
    if whole_scene(scene, settings):
        return scene
    window = _window(scene, settings)
    last_start = scene.end_frame - window
    starts = {scene.start_frame} | {
        min(max(index, scene.start_frame), last_start)
        for index, score in zip(persons.frame_indices, persons.scores, strict=True)
        if score > 0
    }

    def rank(start: int) -> tuple[int, float, int]:
        inside = [
            score
            for index, score in zip(persons.frame_indices, persons.scores, strict=True)
            if start <= index < start + window and score > 0
        ]
        return len(inside), sum(inside), -start

    best = max(starts, key=rank)
    return Segment(best, best + window, scene.fps)
