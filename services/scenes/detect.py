"""Shot boundaries with PySceneDetect, fed from our own single decoding pass.

PySceneDetect would normally open the file itself (OpenCV or PyAV) and decode every frame at
full size before downscaling. Here the frames come from ``services.common.video.iter_arrays``,
scaled by one reused swscale context while they are converted to BGR: a scene pass costs one
decode plus a small-image conversion, and only ``services.common.video`` opens the container.
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
from services.common.video import VideoInfo, iter_arrays

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
    analysis_width: int = Field(default=256, ge=32)
    """Frames are scaled to this width before analysis (PySceneDetect's own auto-downscale
    target), which keeps detection cheap on 720p+ sources without changing the cuts."""


@dataclass(frozen=True, slots=True)
class SceneResult:
    """Every scene of a video, in order, and which one is longest."""

    scenes: tuple[Segment, ...]
    longest_index: int

    def __post_init__(self) -> None:
        if not self.scenes:
            raise ValueError("a scene result holds at least one scene")
        if not 0 <= self.longest_index < len(self.scenes):
            raise ValueError(f"longest_index {self.longest_index} is out of range")

    @property
    def longest(self) -> Segment:
        return self.scenes[self.longest_index]


class _DecodedStream(VideoStream):
    """A forward-only VideoStream over frames we decode, already scaled for analysis."""

    BACKEND_NAME = "h2a-pyav"

    def __init__(self, path: Path, info: VideoInfo, width: int) -> None:
        self._path = Path(path)
        self._info = info
        scale = min(1.0, width / info.width)
        # Even sizes: swscale handles odd ones, but even keeps chroma planes aligned.
        self._size = (
            max(2, round(info.width * scale) // 2 * 2),
            max(2, round(info.height * scale) // 2 * 2),
        )
        self._rate = Fraction(info.fps).limit_denominator(1001)
        self._frames: Iterator[np.ndarray] = self._decode()
        self._read = 0

    def _decode(self) -> Iterator[np.ndarray]:
        return iter_arrays(self._path, *self._size, format="bgr24")

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
        return FrameTimecode(self._info.frame_count, fps=self._rate)

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
        self._frames = self._decode()
        self._read = 0

    def seek(self, target: object) -> None:
        raise NotImplementedError("the analysis stream is forward-only")


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
        Every scene as a frame ``Segment`` in order; a video with no cut is one scene. Ties for
        the longest go to the earliest scene.

    Raises:
        UnreadableVideo: decoding failed or produced no frame.
    """
    stream = _DecodedStream(path, info, settings.analysis_width)
    manager = SceneManager()
    manager.auto_downscale = False
    manager.downscale = 1
    manager.add_detector(_detector(settings))
    manager.detect_scenes(stream)
    if stream.frame_number == 0:
        raise UnreadableVideo(f"{Path(path).name}: no frame decoded for scene analysis")
    # start_in_scene: without it a video with no cut yields no scene at all.
    found = manager.get_scene_list(start_in_scene=True)
    scenes = tuple(Segment(start.frame_num, end.frame_num, info.fps) for start, end in found) or (
        Segment(0, stream.frame_number, info.fps),
    )
    longest = max(range(len(scenes)), key=lambda i: (scenes[i].num_frames, -i))
    _logger.debug(
        "scenes found", extra={"path": str(path), "scenes": len(scenes), "longest": longest}
    )
    return SceneResult(scenes=scenes, longest_index=longest)
