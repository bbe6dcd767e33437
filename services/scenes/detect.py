"""Shot boundaries with PySceneDetect, fed from our own single decoding pass.

PySceneDetect would normally open the file itself (OpenCV or PyAV) and convert every frame at
full size before downscaling. Here ``services.common.video.VideoReader`` decodes without the
H.264 deblocking filter and scales each frame to the analysis size while converting it to BGR
(one reused swscale context): a scene pass costs less than a plain decode, and only
``services.common.video`` opens the container.

Each scene is a ``Segment`` whose ``fps`` is its own mean rate measured from timestamps, so its
``duration_s`` is the source time it covers, also at a variable frame rate. Frames that cannot
be decoded belong to no scene: a scene never spans them, so no clip is cut across a hole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from scenedetect import AdaptiveDetector, ContentDetector, SceneManager
from scenedetect.common import FrameTimecode
from scenedetect.video_stream import VideoStream

from services.common.errors import UnreadableVideo
from services.common.records import Segment
from services.common.video import Timeline, VideoInfo, VideoReader, mean_rate

__all__ = ["SceneResult", "SceneSettings", "detect_scenes"]

_logger = logging.getLogger(__name__)


class SceneSettings(BaseSettings):
    """How shots are found (env ``H2A_SCENES_*``)."""

    model_config = SettingsConfigDict(env_prefix="H2A_SCENES_", extra="forbid")

    detector: Literal["adaptive", "content"] = "adaptive"
    """AdaptiveDetector copes with camera motion; ContentDetector is a plain threshold."""
    adaptive_threshold: float = Field(default=3.0, gt=0)
    content_threshold: float = Field(default=27.0, gt=0)
    min_scene_len: int = Field(default=15, ge=1)
    """Frames a scene must last before another cut may be placed."""
    analysis_size: int = Field(default=256, ge=32)
    """Frames are scaled so that their long side is this before analysis. PySceneDetect's own
    auto-downscale aims the width at 256: the same for landscape video, but portrait video
    (1080x1920) would keep three times the pixels, and their analysis would cost more than the
    decoding."""
    fast_decode: bool = True
    """Decode the analysis pass without H.264 deblocking (about a fifth less decoding); at the
    analysis size the cuts are the same."""


@dataclass(frozen=True, slots=True)
class SceneResult:
    """Every scene of a video, in order, and which one is longest (in source time).

    Frames that could not be decoded belong to no scene.
    """

    scenes: tuple[Segment, ...]
    longest_index: int
    keyframes: tuple[int, ...] = ()
    """The source's keyframes (display indices, ascending): where a decode can start, so the
    driver can start a clip on one (``services.curation.segment.usable_scene``)."""

    def __post_init__(self) -> None:
        if not self.scenes:
            raise ValueError("a scene result holds at least one scene")
        if not 0 <= self.longest_index < len(self.scenes):
            raise ValueError(f"longest_index {self.longest_index} is out of range")

    @property
    def longest(self) -> Segment:
        return self.scenes[self.longest_index]


class _AnalysisStream(VideoStream):
    """A forward-only VideoStream over frames we decode, already scaled for analysis.

    A frame that cannot be decoded is replaced by the one before it (no difference, so no cut
    there) and its index recorded in ``holes``: PySceneDetect's frame numbers stay the display
    indices of every other stage.
    """

    BACKEND_NAME = "h2a-pyav"

    def __init__(self, video: VideoReader, info: VideoInfo, size: int) -> None:
        self._path = video.path
        self._size = _analysis_size(info.width, info.height, size)
        self._rate = Fraction(info.fps).limit_denominator(1001)
        self._total = video.timeline.frame_count
        self.holes: list[tuple[int, int]] = []
        # FAST_BILINEAR: a cheap downscale, like the one PySceneDetect applies to its frames.
        self._frames = self._filled(video.arrays(*self._size, "bgr24", "FAST_BILINEAR"))
        self._read = 0

    def _filled(self, arrays: Iterator[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
        previous, expected = None, 0
        for index, image in arrays:
            if index > expected:
                self.holes.append((expected, index))
                yield from [image if previous is None else previous] * (index - expected)
            yield image
            previous, expected = image, index + 1
        if previous is not None and expected < self._total:
            self.holes.append((expected, self._total))
            yield from [previous] * (self._total - expected)

    @property
    def decoded(self) -> bool:
        """Whether any frame decoded (holes are only filled from decoded frames)."""
        return self._read > 0

    @property
    def path(self) -> str:
        return str(self._path)

    @property
    def name(self) -> str:
        return self._path.stem

    @property
    def is_seekable(self) -> bool:
        return False

    @property
    def frame_rate(self) -> Fraction:
        return self._rate

    @property
    def duration(self) -> FrameTimecode | None:
        return FrameTimecode(self._total, fps=self._rate)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self._size

    @property
    def aspect_ratio(self) -> float:
        return 1.0

    @property
    def position(self) -> FrameTimecode:
        return FrameTimecode(max(0, self._read - 1), fps=self._rate)

    @property
    def position_ms(self) -> float:
        return self.position.seconds * 1000.0

    @property
    def frame_number(self) -> int:
        return self._read

    def read(self, decode: bool = True) -> np.ndarray | bool:
        frame = next(self._frames, None)
        if frame is None:
            return False
        self._read += 1
        return frame if decode else True

    def reset(self) -> None:
        raise NotImplementedError("the analysis stream is forward-only")

    def seek(self, target: object) -> None:
        raise NotImplementedError("the analysis stream is forward-only")


def _analysis_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = min(1.0, long_side / max(width, height))
    # Even sizes: swscale handles odd ones, but even keeps chroma planes aligned.
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def _without_holes(
    bounds: list[tuple[int, int]], holes: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The scenes cut around the undecodable stretches (both lists ascending)."""
    kept = []
    for start, end in bounds:
        for hole_start, hole_end in holes:
            if hole_start < end and start < hole_end:
                if start < hole_start:
                    kept.append((start, hole_start))
                start = max(start, hole_end)
        if start < end:
            kept.append((start, end))
    return kept


def _segment(timeline: Timeline, start: int, end: int, fps: float) -> Segment:
    """Frames ``[start, end)`` at their own mean rate, so that ``duration_s`` is source time."""
    return Segment(start, end, mean_rate(end - start, timeline.span_s(start, end), fps))


def _detector(settings: SceneSettings) -> AdaptiveDetector | ContentDetector:
    if settings.detector == "adaptive":
        return AdaptiveDetector(
            adaptive_threshold=settings.adaptive_threshold, min_scene_len=settings.min_scene_len
        )
    return ContentDetector(
        threshold=settings.content_threshold, min_scene_len=settings.min_scene_len
    )


def detect_scenes(path: Path, info: VideoInfo, settings: SceneSettings) -> SceneResult:
    """Split a video into scenes and pick the longest (the likeliest to hold the action).

    Args:
        path: a local, readable copy of the video.
        info: its probe record (frame rate and size are taken from it, not re-probed).
        settings: detector choice and thresholds.

    Returns:
        Every scene as a frame ``Segment`` in order, timed by the frames' timestamps; a video
        with no cut is one scene, less any frames that could not be decoded. Ties for the
        longest go to the earliest scene.

    Raises:
        UnreadableVideo: decoding failed or produced no frame.
    """
    with VideoReader(path, fast=settings.fast_decode) as video:
        stream = _AnalysisStream(video, info, settings.analysis_size)
        manager = SceneManager()
        manager.auto_downscale = False
        manager.downscale = 1
        manager.add_detector(_detector(settings))
        manager.detect_scenes(stream)
        timeline = video.timeline
    if not stream.decoded:
        raise UnreadableVideo(f"{Path(path).name}: no frame decoded for scene analysis")
    # start_in_scene: without it a video with no cut yields no scene at all.
    found = manager.get_scene_list(start_in_scene=True)
    bounds = [(start.frame_num, end.frame_num) for start, end in found] or [
        (0, stream.frame_number)
    ]
    scenes = tuple(
        _segment(timeline, start, end, info.fps)
        for start, end in _without_holes(bounds, stream.holes)
    )
    longest = max(range(len(scenes)), key=lambda i: (scenes[i].duration_s, -i))
    _logger.debug(
        "scenes found",
        extra={
            "path": str(path),
            "scenes": len(scenes),
            "longest": longest,
            "undecodable": sum(end - start for start, end in stream.holes),
        },
    )
    return SceneResult(scenes=scenes, longest_index=longest, keyframes=timeline.keyframes)
