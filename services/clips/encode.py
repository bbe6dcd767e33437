"""Clip encoding: a chosen segment of a source video, re-encoded to H.264 mp4 in the store.

Which segment becomes the clip is the curation driver's decision (``services.curation``); this
stage only cuts and encodes it. ``ClipSettings`` holds the clip length bounds the driver chooses
within (the paper keeps 3.5-10 s) and the encoding.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.records import ObjectRef, Segment
from services.common.scratch import scratch_dir
from services.common.store import ClipStore
from services.common.video import X264_PRESET, write_clip

__all__ = ["ClipSettings", "encode_clip"]

_logger = logging.getLogger(__name__)


class ClipSettings(BaseSettings):
    """Clip length and encoding (env ``H2A_CLIPS_*``)."""

    model_config = SettingsConfigDict(env_prefix="H2A_CLIPS_", extra="forbid")

    min_seconds: float = Field(default=3.5, gt=0)
    max_seconds: float = Field(default=10.0, gt=0)
    short_side: int = Field(default=320, ge=0)
    """Output short side in pixels, aspect kept; 0 keeps the source size."""
    crf: int = Field(default=23, ge=0, le=51)
    preset: str = X264_PRESET
    """x264 preset; superfast keeps CABAC and costs about 40% less CPU than veryfast here."""


def encode_clip(
    path: Path, source_id: str, segment: Segment, store: ClipStore, settings: ClipSettings
) -> ObjectRef:
    """Re-encode ``segment`` of the video at ``path`` and store it under its clip key.

    A clip already in the store under the same key is returned as is when its bytes verify: clip
    keys name the source content and the frame range, so the same request always means the same
    clip. One that does not verify is encoded again (and the store records the repair).
    """
    key = ClipStore.clip_key(source_id, segment.start_frame, segment.end_frame)
    existing = store.verify(key)
    if existing is not None:
        return existing
    with scratch_dir("clip") as folder:
        local = Path(folder) / "clip.mp4"
        frames = write_clip(
            path,
            local,
            segment.start_frame,
            segment.end_frame,
            short_side=settings.short_side,
            crf=settings.crf,
            preset=settings.preset,
        )
        ref = store.put_file(key, local)
    _logger.info(
        "clip encoded",
        extra={"source_id": source_id, "stage": "clips", "key": key, "frames": frames},
    )
    return ref
