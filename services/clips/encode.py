"""Clip encoding: a chosen segment of a source video, re-encoded to H.264 mp4 in the store.

Which segment becomes the clip is the curation driver's decision (``services.curation``); this
stage cuts and encodes it, upright and with the source's timing, and verifies what it wrote
before storing it: every frame of the segment, and a playback time within the bounds the driver
chooses in (``ClipSettings``; the paper keeps 3.5-10 s). A clip that fails is never stored.
"""

from __future__ import annotations

import itertools
import logging
from contextlib import ExitStack
from pathlib import Path

import av
import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import TooLong, TooShort, UnreadableVideo
from services.common.records import ClipMedia, EncodedClip, Segment
from services.common.scratch import scratch_dir
from services.common.signatures import (
    Signature,
    clip_signature,
    sample_indices,
    signature_from_frames,
)
from services.common.store import ClipStore
from services.common.video import (
    X264_PRESET,
    ClipWriter,
    Timeline,
    VideoInfo,
    VideoReader,
    probe,
)

__all__ = ["ClipDraft", "ClipSettings", "encode_clip", "stored_clip"]

_logger = logging.getLogger(__name__)

# Clip timestamps are rounded to the mp4 track's timescale: bounds allow that much.
_TIME_TOLERANCE_S = 1e-3


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
    keyframe_interval: int = Field(default=32, ge=0)
    """Most frames between keyframes. A training read of a random 16x4 window decodes from the
    keyframe before it: on 8 s clips with 7 B-frames, 32 decodes 26.9 frames per window (64:
    27.3 for 5% fewer bytes; 16: 27.9, more bytes and no fewer frames). Training is bound by
    decoding, storage is not: ``benchmarks/loader.py`` prints the trade-off."""
    keyframe_slack_s: float = Field(default=0.5, ge=0)
    """A clip may start this much after its scene does, on the source's first keyframe there:
    its frames then decode from that keyframe instead of the one before the scene (at x264's
    default of 250 frames, up to 8 s of video decoded for nothing). The driver applies it only
    when the rest still lasts ``min_seconds`` (``services.curation.segment.usable_scene``);
    0 starts every clip at its scene."""
    bframes: int = Field(default=7, ge=0, le=16)
    """B-frames between two P-frames, always that many, none referenced: a strided read skips
    the ones it does not want, so it decodes the P-frames and its own frames. 7 decodes 26.9
    frames per 16x4 window against 42.2 with x264's own choice (up to 3, fewer where motion is
    high), for 17% fewer bytes and 1.4 dB less PSNR (41.95 dB; ``H2A_CLIPS_CRF=21`` gives the
    former 43.1 dB for 8% more bytes); 0: 75.9 frames and 14% more bytes."""


def _verify(clip: VideoInfo, segment: Segment, settings: ClipSettings) -> None:
    """Refuse an encoded clip that lacks frames of its segment or plays outside the bounds."""
    span = f"[{segment.start_frame}, {segment.end_frame})"
    if clip.frame_count != segment.num_frames:
        raise UnreadableVideo(
            f"{segment.num_frames - clip.frame_count} of the {segment.num_frames} frames in "
            f"{span} could not be decoded",
            frames=clip.frame_count,
            expected=segment.num_frames,
        )
    if clip.duration_s + _TIME_TOLERANCE_S < settings.min_seconds:
        raise TooShort(
            f"frames {span} cover {clip.duration_s:.2f} s of source time, below "
            f"{settings.min_seconds} s",
            duration_s=round(clip.duration_s, 3),
        )
    if clip.duration_s - _TIME_TOLERANCE_S > settings.max_seconds:
        raise TooLong(
            f"frames {span} cover {clip.duration_s:.2f} s of source time, above "
            f"{settings.max_seconds} s",
            duration_s=round(clip.duration_s, 3),
        )


def _media(clip: VideoInfo, path: Path, signature: Signature) -> ClipMedia:
    """What the clip file holds, measured on it (a reused clip may predate the settings), and
    its signature."""
    with VideoReader(path) as video:
        keyframes = (*video.timeline.keyframes, clip.frame_count)
        bframes = video.stream.codec_context.has_b_frames  # the decoder's reorder depth
    return ClipMedia(
        frames=clip.frame_count,
        fps=round(clip.fps, 6),
        duration_s=round(clip.duration_s, 6),
        width=clip.width,
        height=clip.height,
        codec=clip.codec,
        keyframe_interval=max((b - a for a, b in itertools.pairwise(keyframes)), default=0),
        bframes=bframes,
        signature=signature.to_hex(),
    )


class _SignedFrames:
    """The frames a clip's signature hashes, kept while the encoder writes them: the signature
    costs the hashing only (``benchmarks/signatures.py``), no second decode."""

    def __init__(self, positions: list[int]) -> None:
        self.positions = positions
        self.frames: dict[int, np.ndarray] = {}

    def keep(self, position: int, frame: av.VideoFrame) -> None:
        if position in self.positions:
            self.frames[position] = frame.to_ndarray(format="rgb24")

    def signature(self) -> Signature:
        """Called once the clip verified: every position was written."""
        return signature_from_frames(np.stack([self.frames[p] for p in self.positions]))


class ClipDraft:
    """A clip being encoded from frames of its segment as a pass over the source decodes them.

    ``encode_clip`` feeds it from its own pass; the in-process engine from the pass that also
    samples the person detector's frames (``services.curation.fused``). ``finish`` verifies
    the clip and stores it, ``close`` throws it away; nothing is stored before ``finish``.
    """

    def __init__(
        self,
        source_id: str,
        segment: Segment,
        store: ClipStore,
        settings: ClipSettings,
        info: VideoInfo,
        timeline: Timeline,
    ) -> None:
        self.source_id = source_id
        self.segment = segment
        self.key = ClipStore.clip_key(source_id, segment.start_frame, segment.end_frame)
        self._store = store
        self._settings = settings
        self._signed = _SignedFrames(sample_indices(segment.num_frames))
        self._resources = ExitStack()
        try:
            folder = self._resources.enter_context(scratch_dir("clip"))
            self._writer = self._resources.enter_context(
                ClipWriter(
                    Path(folder) / "clip.mp4",
                    timeline,
                    info,
                    short_side=settings.short_side,
                    crf=settings.crf,
                    preset=settings.preset,
                    keyframe_interval=settings.keyframe_interval,
                    bframes=settings.bframes,
                    on_frame=self._signed.keep,
                )
            )
        except BaseException:
            self._resources.close()
            raise

    def __enter__(self) -> ClipDraft:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, index: int, frame: av.VideoFrame) -> None:
        """Encode the source's frame ``index`` when the segment holds it."""
        if self.segment.start_frame <= index < self.segment.end_frame:
            self._writer.add(index, frame)

    def finish(self) -> EncodedClip:
        """Verify what was written and store it under the clip key; the draft is closed.

        Raises:
            UnreadableVideo: frames of the segment could not be decoded.
            TooShort: the segment covers less source time than ``min_seconds``.
            TooLong: it covers more than ``max_seconds``.
        """
        segment = self.segment
        try:
            self._writer.finish()
            local = self._writer.dest
            clip = probe(local)  # what the file holds, not what the encoder was given
            _verify(clip, segment, self._settings)
            media = _media(clip, local, self._signed.signature())
            ref = self._store.put_file(self.key, local)
        finally:
            self.close()
        _logger.info(
            "clip encoded",
            extra={
                "source_id": self.source_id,
                "stage": "clips",
                "key": self.key,
                "frames": clip.frame_count,
                "duration_s": round(clip.duration_s, 3),
            },
        )
        return EncodedClip(ref, media)

    def close(self) -> None:
        self._resources.close()


def stored_clip(store: ClipStore, source_id: str, segment: Segment) -> EncodedClip | None:
    """The clip already stored for this segment of this source, when its bytes verify (clip
    keys name the source content and the frame range: the same request means the same clip);
    None when there is none or it failed verification (the next put repairs it)."""
    existing = store.verify(ClipStore.clip_key(source_id, segment.start_frame, segment.end_frame))
    if existing is None:
        return None
    with store.open_local(existing) as local:
        return EncodedClip(existing, _media(probe(local), local, clip_signature(local)))


def encode_clip(
    path: Path,
    source_id: str,
    segment: Segment,
    store: ClipStore,
    settings: ClipSettings,
    info: VideoInfo,
) -> EncodedClip:
    """Re-encode ``segment`` of the video at ``path`` and store it under its clip key.

    A clip already in the store under the same key is returned as is when its bytes verify
    (``stored_clip``); one that does not verify is encoded again (and the store records the
    repair).

    Args:
        info: the video's probe record (its rotation and rate; not probed again).

    Raises:
        UnreadableVideo: frames of the segment could not be decoded.
        TooShort: the segment covers less source time than ``min_seconds``.
        TooLong: it covers more than ``max_seconds``.
    """
    existing = stored_clip(store, source_id, segment)
    if existing is not None:
        return existing
    with (
        VideoReader(path) as video,
        ClipDraft(source_id, segment, store, settings, info, video.timeline) as draft,
    ):
        for index, frame in video.window(segment.start_frame, segment.end_frame):
            draft.add(index, frame)
        return draft.finish()
