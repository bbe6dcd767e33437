"""Which part of the chosen scene becomes the clip: the driver's decision, made on the person
detector's scores.

The paper keeps at least 3.5 s so a whole action fits, and from a longer video the 10-second
segment with the most significant action; here "most significant" is measured by the person
detector: the window holding the most person-positive sampled frames.
"""

from __future__ import annotations

from services.clips.encode import ClipSettings
from services.common.errors import TooShort
from services.common.records import Segment
from services.persons.detect import PersonResult

__all__ = ["choose_segment"]


def choose_segment(scene: Segment, persons: PersonResult, settings: ClipSettings) -> Segment:
    """The part of ``scene`` that becomes the clip.

    Args:
        scene: the chosen (longest) scene.
        persons: detector scores on frames sampled inside it.
        settings: the length bounds.

    Returns:
        The whole scene when it lasts at most ``max_seconds``; otherwise the ``max_seconds``
        window with the most person-positive sampled frames (ties: the higher score sum, then
        the earliest).

    Raises:
        TooShort: the scene lasts less than ``min_seconds``.
    """
    if scene.duration_s + 1e-9 < settings.min_seconds:
        raise TooShort(
            f"longest scene lasts {scene.duration_s:.2f} s, below {settings.min_seconds} s",
            duration_s=round(scene.duration_s, 3),
        )
    window = max(1, int(settings.max_seconds * scene.fps))
    if scene.num_frames <= window:
        return scene
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
