"""Frozen records that cross stage boundaries: object references, segments, rejections.

Core functions take and return these; gRPC servicers convert them to and from proto messages
next to the servicer. Stage-specific results (scenes, person scores) live with their stage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "STAGES",
    "ClipMedia",
    "ClipRecord",
    "EncodedClip",
    "FailedAttempt",
    "ObjectRef",
    "Outcome",
    "Rejection",
    "Segment",
    "utc_now",
]

STAGES = ("ingestion", "scenes", "persons", "clips")
"""The curation stages in the order a source passes them; each is one gRPC service."""


def utc_now() -> str:
    """ISO-8601 UTC timestamp, second precision, for records people read."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A stored object: services pass these, never video bytes."""

    key: str
    uri: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Segment:
    """Frames ``[start_frame, end_frame)`` of a video at ``fps``."""

    start_frame: int
    end_frame: int
    fps: float

    def __post_init__(self) -> None:
        if not 0 <= self.start_frame <= self.end_frame:
            raise ValueError(f"segment [{self.start_frame}, {self.end_frame}) is not a range")
        if self.fps <= 0:
            raise ValueError(f"segment fps must be positive, got {self.fps}")

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return self.end_frame / self.fps

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a source did not become a clip; one JSON line in the run's rejection list."""

    source: str
    stage: str
    reason: str
    detail: str
    source_id: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, line: str) -> Rejection:
        return cls(**json.loads(line))


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """A source whose processing broke off on a retryable failure (a store or service that was
    unavailable, a deadline, a download that failed): not a verdict on the video, so it is not a
    rejection; the next run tries the source again."""

    source: str
    stage: str
    reason: str
    detail: str
    source_id: str = ""
    created_at: str = field(default_factory=utc_now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, line: str) -> FailedAttempt:
        return cls(**json.loads(line))


@dataclass(frozen=True, slots=True)
class ClipMedia:
    """What an encoded clip file holds, measured on the file after encoding.

    The training loader reads these instead of probing every clip every epoch; the encoding
    fields say how the clip was written for training reads (``ClipSettings``).
    """

    frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    codec: str
    keyframe_interval: int
    """The most frames between two keyframes (0: the encoder's default)."""
    bframes: int
    """The decoder's reorder delay in frames: 0 for a clip without B-frames."""
    signature: str = ""
    """The clip's perceptual signature (hex), for near-duplicate and contamination checks."""


@dataclass(frozen=True, slots=True)
class EncodedClip:
    """The clip stage's result: the stored clip and what it holds."""

    clip: ObjectRef
    media: ClipMedia


@dataclass(frozen=True, slots=True)
class ClipRecord:
    """A curated clip with its full provenance; one JSON line in ``clips.jsonl``.

    ``metadata`` holds the platform metadata of the source (views, description, ...) and how
    the source was found (hashtag rule, research-API query), when known.
    """

    clip: ObjectRef
    source_id: str
    source: str
    hashtag: str
    start_frame: int
    end_frame: int
    fps: float
    person_frames: int
    person_scores: tuple[float, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now)
    media: ClipMedia | None = None
    """None for records written before clips carried it: the loader then probes the file."""

    @property
    def duration_s(self) -> float:
        return (self.end_frame - self.start_frame) / self.fps

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, line: str) -> ClipRecord:
        return cls.from_dict(json.loads(line))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipRecord:
        """The record from its ``asdict`` form (``to_json`` parsed)."""
        fields = {**data, "clip": ObjectRef(**data["clip"])}
        fields["person_scores"] = tuple(data.get("person_scores", ()))
        if data.get("media") is not None:
            fields["media"] = ClipMedia(**data["media"])
        return cls(**fields)


Outcome = ClipRecord | Rejection | FailedAttempt
"""What one source's run through the stages ends in."""
