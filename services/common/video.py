"""Video probing, frame reading and clip writing: the only module that opens PyAV or decord.

``probe`` demuxes the whole container (cheap: no decoding) because container frame counts lie for
some AVIs, and decodes the first frame so that a file that cannot be decoded fails here, with a
typed error, instead of deep inside a stage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from services.common.errors import NoVideoStream, UnreadableVideo

__all__ = [
    "X264_PRESET",
    "VideoInfo",
    "iter_arrays",
    "iter_frames",
    "probe",
    "read_frames",
    "write_clip",
    "write_frames",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video container holds, measured rather than trusted from the header."""

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    rotation: int
    has_audio: bool
    size_bytes: int

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise UnreadableVideo(f"{path.name}: no such file", path=str(path))
    if path.stat().st_size == 0:
        raise UnreadableVideo(f"{path.name}: empty file (0 bytes)", path=str(path))
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise UnreadableVideo(f"{path.name}: not a readable container ({error})") from error


def probe(path: Path) -> VideoInfo:
    """Measure container, stream, fps, decodable frame count, duration and rotation.

    Raises:
        UnreadableVideo: missing, empty, truncated or not a media container.
        NoVideoStream: a valid container without video (audio-only, subtitles).
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise NoVideoStream(f"{path.name}: the container has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise UnreadableVideo(f"{path.name}: the video stream has no frame rate")
        try:
            first = next(container.decode(stream), None)
            if first is None:
                raise UnreadableVideo(f"{path.name}: no frame could be decoded")
            rotation = int(first.rotation or 0)
            width, height = first.width, first.height
            container.seek(0)
            # One packet per frame for the codecs we meet; empty flush packets carry no size.
            frame_count = sum(1 for packet in container.demux(stream) if packet.size)
        except av.error.FFmpegError as error:
            raise UnreadableVideo(f"{path.name}: decoding failed ({error})") from error
        fps = float(rate)
        return VideoInfo(
            path=str(path),
            container=container.format.name,
            codec=stream.codec_context.name,
            width=width,
            height=height,
            fps=fps,
            frame_count=frame_count,
            duration_s=frame_count / fps,
            rotation=rotation,
            has_audio=bool(container.streams.audio),
            size_bytes=path.stat().st_size,
        )


def read_frames(path: Path, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames at ``indices`` as uint8 RGB ``(T, H, W, 3)`` with decord.

    Indices past the decodable end are clamped to the last frame (container counts can be off
    by a frame or two); an unreadable file raises UnreadableVideo.
    """
    from decord import DECORDError, VideoReader, cpu

    try:
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=1)
        last = len(reader) - 1
        if last < 0:
            raise UnreadableVideo(f"{Path(path).name}: no decodable frames")
        clamped = [min(max(int(i), 0), last) for i in indices]
        return reader.get_batch(clamped).asnumpy()
    except DECORDError as error:
        raise UnreadableVideo(f"{Path(path).name}: decord failed ({error})") from error


def _keyframe_before(
    container: av.container.InputContainer, stream: av.VideoStream, frame_index: int
) -> tuple[int, dict[int, int]] | None:
    """The pts of the last keyframe at or before display index ``frame_index``, and every
    packet's display index by pts; None when timestamps cannot index the frames.

    Display order is pts order, so a frame's index is the rank of its pts: exact for B-frames
    and variable frame rates, where pts arithmetic would drift. Demuxing reads no pixels.
    """
    stamps, keyframes = [], []
    for packet in container.demux(stream):
        if not packet.size:
            continue
        if packet.pts is None:
            return None
        stamps.append(packet.pts)
        if packet.is_keyframe:
            keyframes.append(packet.pts)
    rank = {pts: index for index, pts in enumerate(sorted(stamps))}
    if len(rank) != len(stamps):
        return None  # duplicate timestamps: only counting by decoding is safe
    before = [pts for pts in keyframes if rank[pts] <= frame_index]
    return (max(before, key=rank.__getitem__), rank) if before else None


def _indexed_frames(
    container: av.container.InputContainer, stream: av.VideoStream, rank: dict[int, int] | None
) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(display index, frame)`` from the container's position: by pts rank after a seek,
    else by counting from the first frame."""
    if rank is not None:
        for frame in container.decode(stream):
            if frame.pts not in rank:
                break  # a frame the index does not know: only counting can place it
            yield rank[frame.pts], frame
        else:
            return
        container.seek(0, stream=stream)
    yield from enumerate(container.decode(stream))


def iter_frames(
    path: Path, start_frame: int = 0, end_frame: int | None = None
) -> Iterator[av.VideoFrame]:
    """Decoded PyAV frames ``[start_frame, end_frame)`` in display order.

    A later start seeks to the keyframe before it instead of decoding from the first frame
    (clips near the end of long sources); indices are those of a decode from the start.
    """
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        seek = _keyframe_before(container, stream, start_frame) if start_frame > 0 else None
        container.seek(seek[0] if seek else 0, stream=stream, backward=True)
        wanted = start_frame  # the next index to yield: skips frames before it and repeats
        try:
            for index, frame in _indexed_frames(container, stream, seek[1] if seek else None):
                if end_frame is not None and index >= end_frame:
                    break
                if index >= wanted:
                    wanted = index + 1
                    yield frame
        except av.error.FFmpegError as error:
            raise UnreadableVideo(f"{Path(path).name}: decoding failed ({error})") from error


def iter_arrays(path: Path, width: int, height: int, format: str = "bgr24") -> Iterator[np.ndarray]:
    """Every decoded frame scaled to ``width`` x ``height`` as an array (``(H, W, 3)`` for
    ``bgr24``/``rgb24``), in display order.

    One scaler serves the whole pass: ``frame.to_ndarray(width=...)`` builds a new one per frame,
    which costs more than decoding itself on small videos.
    """
    scaler = av.video.reformatter.VideoReformatter()
    for frame in iter_frames(path):
        yield scaler.reformat(frame, width=width, height=height, format=format).to_ndarray()


def _even(value: float) -> int:
    # H.264 with yuv420p needs even dimensions.
    return max(2, round(value / 2) * 2)


X264_PRESET = "superfast"
"""The x264 preset clips are encoded with (``ClipSettings.preset`` says why; ``H2A_CLIPS_PRESET``
overrides it in the clips service)."""


def write_clip(
    source: Path,
    dest: Path,
    start_frame: int,
    end_frame: int,
    short_side: int = 320,
    crf: int = 23,
    preset: str = X264_PRESET,
) -> int:
    """Re-encode frames ``[start_frame, end_frame)`` of ``source`` to an H.264 mp4.

    The short side is scaled to ``short_side`` (0 keeps the size), the aspect ratio kept.
    Returns the number of frames written.
    """
    info = probe(source)
    scale = short_side / info.short_side if short_side else 1.0
    width, height = _even(info.width * scale), _even(info.height * scale)
    rate = Fraction(info.fps).limit_denominator(1001)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with av.open(str(dest), mode="w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        scaler = av.video.reformatter.VideoReformatter()  # one for all frames, see iter_arrays
        for frame in iter_frames(source, start_frame, end_frame):
            image = scaler.reformat(frame, width=width, height=height, format="yuv420p")
            image.pts = written
            image.time_base = 1 / rate
            for packet in stream.encode(image):
                output.mux(packet)
            written += 1
        for packet in stream.encode():
            output.mux(packet)
    if written == 0:
        dest.unlink(missing_ok=True)
        raise UnreadableVideo(f"{Path(source).name}: no frames in [{start_frame}, {end_frame})")
    return written


def write_frames(path: Path, frames: np.ndarray, fps: float = 25.0, crf: int = 18) -> int:
    """Encode uint8 RGB frames ``(T, H, W, 3)`` (even H and W) as an H.264 mp4.

    For generated media (synthetic datasets, tests); returns the number of frames written.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frames need even height and width for yuv420p, got {height}x{width}")
    rate = Fraction(fps).limit_denominator(1001)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for index, rgb in enumerate(frames):
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            image = image.reformat(format="yuv420p")
            image.pts = index
            image.time_base = 1 / rate
            for packet in stream.encode(image):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return len(frames)
