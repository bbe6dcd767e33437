"""Video probing, frame reading and clip writing: the only module that opens PyAV or decord.

Every reader starts with one demux pass (packets only, no pixels decoded): it gives each frame's
display index (the rank of its pts), its presentation time and the keyframes to seek to. A frame
index therefore names the same frame in every stage, also with B-frames, a variable frame rate or
frames that fail to decode: an undecodable frame leaves a hole at its index instead of shifting
the frames after it. Durations come from timestamps, never from the average frame rate.

Phones store portrait video sideways with a display matrix (older files: a ``rotate`` tag);
the readers that hand pixels to a detector or an encoder turn them upright.

``probe`` decodes the first frame so that a file that cannot be decoded fails there, with a
typed error, instead of deep inside a stage.
"""

from __future__ import annotations

import bisect
import io
import logging
import math
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from services.common.errors import NoVideoStream, UnreadableVideo

__all__ = [
    "X264_PRESET",
    "ClipWriter",
    "Timeline",
    "VideoInfo",
    "VideoReader",
    "iter_frames",
    "mean_rate",
    "probe",
    "read_frames",
    "write_clip",
    "write_frames",
]

_logger = logging.getLogger(__name__)

# FFmpeg's AVColorRange for video range (16-235): what H.264 clips are written in.
_LIMITED = 1
# FFmpeg's AVColorSpace of the YUV matrices written and read here (2: unspecified, read as 601).
_COLORSPACES = {"bt709": 1, "bt601": 2}
# Generated media (write_frames) with explicit times: fine enough for any frame rate.
_GENERATED_TIME_BASE = Fraction(1, 90_000)


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video container holds, measured rather than trusted from the header.

    ``width`` and ``height`` are the stored frame size; ``rotation`` is the counter-clockwise
    turn (0, 90, 180 or 270 degrees) that shows a stored frame upright; ``duration_s`` spans the
    frames' timestamps and ``fps`` is the average rate (``frame_count / duration_s`` for a
    variable frame rate).
    """

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

    @property
    def upright_size(self) -> tuple[int, int]:
        """Width and height as the video is shown, after its rotation."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


@dataclass(frozen=True, slots=True)
class Timeline:
    """When each frame of a video shows, in display order, from one demux pass.

    ``pts[i]`` is frame ``i``'s presentation timestamp in ``time_base`` units and ``end_pts``
    where the last frame stops showing. ``indexed`` is False when the container's timestamps
    cannot place frames (missing or repeated pts): the times are then nominal (``i / fps``) and
    frames are placed by counting them from the first.
    """

    pts: tuple[int, ...]
    end_pts: int
    time_base: Fraction
    keyframes: tuple[int, ...]
    """Display indices of the frames a decode can start from, ascending."""
    indexed: bool

    @property
    def frame_count(self) -> int:
        return len(self.pts)

    def seconds(self, index: int) -> float:
        """When frame ``index`` starts showing, from the first frame; ``frame_count`` gives
        the end of the last frame."""
        at = self.pts[index] if index < len(self.pts) else self.end_pts
        return float((at - self.pts[0]) * self.time_base)

    def span_s(self, start: int, end: int) -> float:
        """Source time that frames ``[start, end)`` cover."""
        return self.seconds(end) - self.seconds(start)

    def keyframe_before(self, index: int) -> int:
        """The last keyframe at or before ``index`` (0 when there is none)."""
        position = bisect.bisect_right(self.keyframes, index)
        return self.keyframes[position - 1] if position else 0


def _open(source: Path | bytes, name: str) -> av.container.InputContainer:
    if isinstance(source, bytes):
        if not source:
            raise UnreadableVideo(f"{name}: empty file (0 bytes)")
        opened: str | io.BytesIO = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise UnreadableVideo(f"{name}: no such file", path=str(path))
        if path.stat().st_size == 0:
            raise UnreadableVideo(f"{name}: empty file (0 bytes)", path=str(path))
        opened = str(path)
    try:
        return av.open(opened)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise UnreadableVideo(f"{name}: not a readable container ({error})") from error


def _nominal_rate(stream: av.VideoStream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def _timeline(container: av.container.InputContainer, stream: av.VideoStream) -> Timeline:
    """Every packet's timestamps, read without decoding; display order is pts order."""
    packets = [
        (packet.pts, packet.duration, packet.is_keyframe)
        for packet in container.demux(stream)
        if packet.size  # empty flush packets carry no frame
    ]
    if not packets:
        raise UnreadableVideo("the video stream holds no frame")
    stamps = [pts for pts, _, _ in packets]
    if None not in stamps and len(set(stamps)) == len(stamps):
        ordered = sorted(stamps)
        rank = {pts: index for index, pts in enumerate(ordered)}
        # Where the stream ends, as muxers record it: the latest pts + duration. Without any
        # duration, the last frame is assumed to last as long as the one before it.
        end = max(pts + (duration or 0) for pts, duration, _ in packets)
        if end == ordered[-1]:
            end += ordered[-1] - ordered[-2] if len(ordered) > 1 else 1
        keyframes = sorted(rank[pts] for pts, _, key in packets if key)
        return Timeline(tuple(ordered), end, stream.time_base, tuple(keyframes), True)
    rate = _nominal_rate(stream)
    if rate is None:
        raise UnreadableVideo("the video stream has neither timestamps nor a frame rate")
    return Timeline(tuple(range(len(packets))), len(packets), 1 / rate, (0,), False)


def mean_rate(frames: int, seconds: float, nominal: float) -> float:
    """``frames / seconds``, or ``nominal`` (a header's rate) when the two agree up to the
    rounding of timestamps to their time base: a constant rate keeps its exact value."""
    if seconds <= 0:
        return nominal
    measured = frames / seconds
    return nominal if math.isclose(measured, nominal, rel_tol=1e-3) else measured


def _rotation(stream: av.VideoStream, frame: av.VideoFrame) -> int:
    """The counter-clockwise turn (0, 90, 180, 270) that shows ``frame`` upright."""
    angle: float = frame.rotation  # the display matrix, counter-clockwise
    if not angle:
        tag = next((value for key, value in stream.metadata.items() if key.lower() == "rotate"), "")
        try:
            angle = -float(tag)  # the legacy tag turns clockwise
        except ValueError:
            angle = 0.0
    return round(angle / 90) % 4 * 90


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(image, rotation // 90)) if rotation else image


def _fit(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    return max(2, round(width * scale)), max(2, round(height * scale))


class VideoReader:
    """An open video: its ``Timeline`` and its frames by display index.

    Args:
        path: a local video file, or a whole file's bytes (a shard member).
        fast: skip H.264 deblocking (``skip_loop_filter``), about a fifth of the decoding, for
            analysis that only looks at downscaled frames; never for frames shown or stored.
        threads: frame and slice threads, the lowest wall time for one pass at a few % more
            CPU; False decodes on the calling thread (loader workers, one core each).
        name: how errors name a video given as bytes.

    Raises:
        UnreadableVideo: missing, empty, truncated or not a media container.
        NoVideoStream: a valid container without video (audio-only, subtitles).
    """

    def __init__(
        self, path: Path | bytes, fast: bool = False, threads: bool = True, name: str = ""
    ) -> None:
        self.path = Path(name or "<bytes>") if isinstance(path, bytes) else Path(path)
        self._container = _open(path, self.path.name)
        try:
            if not self._container.streams.video:
                raise NoVideoStream(f"{self.path.name}: the container has no video stream")
            self._stream = self._container.streams.video[0]
            if threads:
                self._stream.thread_type = "AUTO"
            if fast:
                self._stream.codec_context.options = {"skip_loop_filter": "all"}
            self.timeline = _timeline(self._container, self._stream)
        except av.error.FFmpegError as error:
            self._container.close()
            raise UnreadableVideo(f"{self.path.name}: demuxing failed ({error})") from error
        except BaseException:
            self._container.close()
            raise
        timeline = self.timeline
        self._rank = (
            {pts: index for index, pts in enumerate(timeline.pts)} if timeline.indexed else None
        )
        self.decoded = 0
        """Frames decoded so far (skipped frames not counted): what a read cost."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def stream(self) -> av.VideoStream:
        return self._stream

    @property
    def size(self) -> tuple[int, int]:
        """Stored width and height, from the stream header."""
        context = self._stream.codec_context
        return context.width, context.height

    def frames(
        self, start: int = 0, end: int | None = None, wanted: Collection[int] | None = None
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames ``[start, end)`` in display order, each with its index.

        A frame that cannot be decoded (a damaged packet, a frame the decoder flags corrupt) is
        left out: its index is a hole. A later start seeks to the keyframe before it. With
        ``wanted``, frames outside it that no other frame references are not decoded at all.

        Raises:
            UnreadableVideo: decoding failed in a way that is not one damaged frame.
        """
        try:
            yield from self._frames(start, end, wanted)
        except av.error.FFmpegError as error:
            raise UnreadableVideo(f"{self.path.name}: decoding failed ({error})") from error

    def _frames(
        self, start: int, end: int | None, wanted: Collection[int] | None
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        timeline = self.timeline
        first = timeline.keyframe_before(start) if self._rank is not None else 0
        self._container.seek(timeline.pts[first], stream=self._stream, backward=True)
        following = start  # the next index to yield: skips frames before it, and repeats
        while True:
            counted = 0
            for frame in self._decode(wanted):
                if self._rank is None:
                    index, counted = counted, counted + 1
                else:
                    index = self._rank.get(frame.pts, -1)
                    if index < 0:  # a frame the demuxer did not list: only counting places it
                        break
                if end is not None and index >= end:
                    return
                if index >= following and not frame.is_corrupt:
                    following = index + 1
                    yield index, frame
            else:
                return
            self._rank = None
            self._container.seek(0, stream=self._stream, backward=True)

    def _decode(self, wanted: Collection[int] | None) -> Iterator[av.VideoFrame]:
        context = self._stream.codec_context
        context.skip_frame = "DEFAULT"
        for packet in self._container.demux(self._stream):
            if wanted is not None and self._rank is not None and packet.pts in self._rank:
                # Display index by pts: a frame nobody wants is skipped when nothing refers to it.
                context.skip_frame = "DEFAULT" if self._rank[packet.pts] in wanted else "NONREF"
            try:
                decoded = self._stream.decode(packet)
            except av.error.InvalidDataError:
                _logger.debug("undecodable packet skipped", extra={"path": str(self.path)})
                continue
            self.decoded += len(decoded)
            yield from decoded

    def window(self, start: int, end: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Every decodable frame of ``[start, end)`` with its index (``frames``): from the
        keyframe before ``start``, where frames before it are decoded only when the window's
        frames refer to them."""
        return self.frames(start, end, range(start, end))

    def arrays(
        self, width: int, height: int, format: str = "bgr24", interpolation: str | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Every decodable frame scaled to ``width`` x ``height``, stored orientation, with its
        index.

        One scaler serves the whole pass: ``frame.to_ndarray(width=...)`` builds a new one per
        frame, which costs more than decoding itself on small videos.
        """
        scaler = av.video.reformatter.VideoReformatter()
        for index, frame in self.frames():
            image = scaler.reformat(
                frame, width=width, height=height, format=format, interpolation=interpolation
            )
            yield index, image.to_ndarray()

    def converter(
        self, long_side: int, format: str = "bgr24"
    ) -> Callable[[av.VideoFrame], np.ndarray]:
        """A function turning this video's decoded frames upright, scaled to ``long_side``
        (aspect kept) while converting them to ``format``; one scaler serves every call."""
        width, height = _fit(*self.size, long_side)
        scaler = av.video.reformatter.VideoReformatter()

        def convert(frame: av.VideoFrame) -> np.ndarray:
            image = scaler.reformat(frame, width=width, height=height, format=format)
            return _upright(image.to_ndarray(), _rotation(self._stream, frame))

        return convert

    def sample(
        self, indices: Iterable[int], long_side: int, format: str = "bgr24"
    ) -> dict[int, np.ndarray]:
        """The frames at ``indices``, upright, scaled to ``long_side`` (aspect kept).

        One forward pass from the keyframe before the first index to the last; frames between
        them are decoded only when others refer to them, and only the wanted ones converted.
        A frame that cannot be decoded is absent from the result.
        """
        wanted = set(indices)
        if not wanted:
            return {}
        convert = self.converter(long_side, format)
        return {
            index: convert(frame)
            for index, frame in self.frames(min(wanted), max(wanted) + 1, wanted)
            if index in wanted
        }

    def rgb(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at ``indices`` as uint8 RGB ``(T, H, W, 3)``, upright, full size.

        One forward pass (``sample``): a strided training window of a clip ``write_clip``
        wrote costs its reference frames plus the wanted ones. Indices past the end are clamped
        to the last frame (list frame counts can be off by one or two).

        Raises:
            UnreadableVideo: no frames, or a wanted frame cannot be decoded.
        """
        last = self.timeline.frame_count - 1
        if last < 0:
            raise UnreadableVideo(f"{self.path.name}: no decodable frames")
        clamped = [min(max(int(i), 0), last) for i in indices]
        found = self.sample(clamped, max(self.size), format="rgb24")
        missing = sorted(set(clamped) - found.keys())
        if missing:
            raise UnreadableVideo(
                f"{self.path.name}: {len(missing)} of the wanted frames cannot be decoded",
                frames=missing[:8],
            )
        return np.stack([found[index] for index in clamped])


def probe(path: Path) -> VideoInfo:
    """Measure container, stream, frame count, duration (from timestamps) and rotation.

    Raises:
        UnreadableVideo: missing, empty, truncated or not a media container, or no frame
            decodes.
        NoVideoStream: a valid container without video (audio-only, subtitles).
    """
    path = Path(path)
    with VideoReader(path) as video:
        timeline = video.timeline
        first = next(video.frames(), None)
        if first is None:
            raise UnreadableVideo(f"{path.name}: no frame could be decoded")
        frame = first[1]
        duration = timeline.seconds(timeline.frame_count)
        rate = _nominal_rate(video.stream)
        fps = mean_rate(timeline.frame_count, duration, float(rate) if rate else 0.0)
        container = video._container
        return VideoInfo(
            path=str(path),
            container=container.format.name,
            codec=video.stream.codec_context.name,
            width=frame.width,
            height=frame.height,
            fps=fps,
            frame_count=timeline.frame_count,
            duration_s=duration,
            rotation=_rotation(video.stream, frame),
            has_audio=bool(container.streams.audio),
            size_bytes=path.stat().st_size,
        )


def read_frames(
    source: Path | bytes, indices: Sequence[int], threads: bool = True, name: str = ""
) -> np.ndarray:
    """Decode the frames at ``indices`` as uint8 RGB ``(T, H, W, 3)`` (``VideoReader.rgb``).

    Args:
        source: a local video file or a whole file's bytes (a shard member).
        threads: decoder threads (see ``VideoReader``); False in loader workers.
        name: how errors name a video given as bytes.
    """
    with VideoReader(source, threads=threads, name=name) as video:
        return video.rgb(indices)


def iter_frames(
    path: Path, start_frame: int = 0, end_frame: int | None = None
) -> Iterator[av.VideoFrame]:
    """Decoded PyAV frames ``[start_frame, end_frame)`` in display order (``VideoReader.frames``
    without the indices)."""
    with VideoReader(path) as video:
        for _, frame in video.frames(start_frame, end_frame):
            yield frame


def _even(value: float) -> int:
    # H.264 with yuv420p needs even dimensions.
    return max(2, round(value / 2) * 2)


X264_PRESET = "superfast"
"""The x264 preset clips are encoded with (``ClipSettings.preset`` says why; ``H2A_CLIPS_PRESET``
overrides it in the clips service)."""


def _until(timeline: Timeline, index: int) -> int:
    return timeline.pts[index] if index < timeline.frame_count else timeline.end_pts


def _mux(
    output: av.container.OutputContainer, packets: list[av.Packet], durations: dict[int, int]
) -> None:
    # The encoder leaves packet durations unset; the muxer would guess the last one from the
    # average rate.
    for packet in packets:
        packet.duration = durations.pop(packet.pts)
        output.mux(packet)


class ClipWriter:
    """An upright H.264 mp4 written from a source's decoded frames as they come.

    Each frame keeps its source presentation time, rebased to start at 0 in the source's time
    base, so the clip plays exactly the source time it covers, also at a variable frame rate.
    Frames are turned upright by the source's rotation (the clip has no display matrix) and
    scaled to ``short_side`` (0 keeps the size), aspect kept. The frames come from any pass
    over the source (``write_clip``'s own, or one that also feeds a detector).

    Args:
        dest: the mp4 to write.
        timeline: the source's timeline (``VideoReader.timeline``): frame times and durations.
        info: the source's probe record (its rotation, size and rate).
        keyframe_interval: the most frames between keyframes (0: x264's default, 250).
        bframes: B-frames between two reference frames, always that many (x264's b-adapt 0;
            -1: the preset's, chosen frame by frame).
        on_frame: called with each written frame's position in the clip and the frame as it
            is encoded (upright, output size): what a caller needs of the pixels without
            decoding the clip again.
    """

    def __init__(
        self,
        dest: Path,
        timeline: Timeline,
        info: VideoInfo,
        short_side: int = 320,
        crf: int = 23,
        preset: str = X264_PRESET,
        keyframe_interval: int = 0,
        bframes: int = -1,
        on_frame: Callable[[int, av.VideoFrame], None] | None = None,
    ) -> None:
        upright_width, upright_height = info.upright_size
        scale = short_side / min(upright_width, upright_height) if short_side else 1.0
        self._size = _even(upright_width * scale), _even(upright_height * scale)
        # Scaled in the stored orientation, then turned: the scaler sees the decoded frame as is.
        self._stored = self._size[::-1] if info.rotation % 180 else self._size
        self._rotation = info.rotation
        self._timeline = timeline
        self._on_frame = on_frame
        self.dest = Path(dest)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._output = av.open(str(self.dest), mode="w", format="mp4")
        stream = self._output.add_stream("libx264", rate=Fraction(info.fps).limit_denominator(1001))
        stream.width, stream.height = self._size
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = timeline.time_base
        stream.options = {"crf": str(crf), "preset": preset}
        if keyframe_interval:
            stream.options["g"] = str(keyframe_interval)
        if bframes >= 0:
            # A fixed pattern: x264's own choice puts P-frames wherever motion is high, and a
            # strided read decodes every one of them.
            stream.options["bf"] = str(bframes)
            stream.options["x264-params"] = "b-adapt=0"
        # B-frames that nothing references: a reader that wants every 4th frame (the training
        # window) skips decoding them (``VideoReader.frames(wanted=...)``), for 1.5% more bytes.
        stream.options["b-pyramid"] = "none"
        self._stream = stream
        self._scaler = av.video.reformatter.VideoReformatter()  # one for all frames, see arrays()
        self._origin: int | None = None
        # Each frame shows until the next source frame: the muxer ends the clip at the latest
        # pts + duration, so the clip lasts exactly the source time it covers.
        self._durations: dict[int, int] = {}
        self.written = 0

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._output.close()

    def add(self, index: int, frame: av.VideoFrame) -> None:
        """Encode the source's frame ``index`` (frames come in display order)."""
        width, height = self._size
        if self._rotation:
            stored = self._scaler.reformat(
                frame, width=self._stored[0], height=self._stored[1], format="rgb24"
            )
            turned = _upright(stored.to_ndarray(), self._rotation)
            image = av.VideoFrame.from_ndarray(turned, format="rgb24")  # the encoder converts
        else:
            # Scaled as they are, in the source's colour matrix (a phone's BT.709), limited
            # range; the clip is tagged with it, or players would read BT.601 colours.
            image = self._scaler.reformat(
                frame, width=width, height=height, format="yuv420p", dst_color_range=_LIMITED
            )
            if not self.written:
                context = self._stream.codec_context
                context.colorspace, context.color_range = image.colorspace, _LIMITED
        if self._on_frame is not None:
            self._on_frame(self.written, image)
        pts = self._timeline.pts[index]
        self._origin = pts if self._origin is None else self._origin
        image.pts, image.time_base = pts - self._origin, self._timeline.time_base
        self._durations[image.pts] = _until(self._timeline, index + 1) - pts
        # A decoded frame keeps the source's frame type, and libx264 obeys it: the clip would
        # copy the source's GOP (a phone's: no B-frame) instead of its own settings.
        image.pict_type = av.video.frame.PictureType.NONE
        _mux(self._output, self._stream.encode(image), self._durations)
        self.written += 1

    def finish(self) -> int:
        """Flush the encoder and close the file; the number of frames written.

        Raises:
            UnreadableVideo: no frame was written (the file is removed).
        """
        try:
            _mux(self._output, self._stream.encode(), self._durations)
        finally:
            self._output.close()
        if self.written == 0:
            self.dest.unlink(missing_ok=True)
            raise UnreadableVideo("none of the frames of the clip could be decoded")
        return self.written


def write_clip(
    source: Path,
    dest: Path,
    start_frame: int,
    end_frame: int,
    short_side: int = 320,
    crf: int = 23,
    preset: str = X264_PRESET,
    info: VideoInfo | None = None,
    keyframe_interval: int = 0,
    bframes: int = -1,
    on_frame: Callable[[int, av.VideoFrame], None] | None = None,
) -> int:
    """Re-encode frames ``[start_frame, end_frame)`` of ``source`` to an upright H.264 mp4
    (``ClipWriter``; ``info`` is probed when not given).

    Returns:
        The number of frames written: fewer than asked when some could not be decoded (the
        caller verifies the clip).

    Raises:
        UnreadableVideo: no frame of the range could be decoded.
    """
    info = info or probe(source)
    with (
        VideoReader(source) as video,
        ClipWriter(
            dest,
            video.timeline,
            info,
            short_side,
            crf,
            preset,
            keyframe_interval,
            bframes,
            on_frame,
        ) as writer,
    ):
        for index, frame in video.window(start_frame, end_frame):
            writer.add(index, frame)
        return writer.finish()


def write_frames(
    path: Path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 25.0,
    crf: int = 18,
    times_s: Sequence[float] | None = None,
    rotation: int = 0,
    preset: str = "veryfast",
    keyframe_interval: int = 0,
    matrix: Literal["bt601", "bt709"] = "bt601",
) -> int:
    """Encode uint8 RGB frames ``(T, H, W, 3)`` (even H and W) as an H.264 mp4.

    For generated media (synthetic datasets, tests, benchmarks). ``frames`` may be an iterable
    of ``(H, W, 3)`` arrays, so long videos need not fit in memory.

    Args:
        times_s: each frame's presentation time in seconds (a variable frame rate); regular
            ``1 / fps`` steps when not given.
        rotation: counter-clockwise degrees a player turns the stored frames by (the display
            matrix), as phones write portrait video stored sideways.
        keyframe_interval: the most frames between keyframes (x264 also starts one at a cut);
            0 keeps x264's default of 250.
        matrix: the YUV colour matrix, tagged in the stream: phones record BT.709.

    Returns:
        The number of frames written.
    """
    rate = Fraction(fps).limit_denominator(1001)
    time_base = 1 / rate if times_s is None else _GENERATED_TIME_BASE
    # Each frame's pts in time_base units, and one more: where the last frame ends.
    if times_s is None:
        stamps: Sequence[int] = range(sys.maxsize)  # regular steps: pts = index
    else:
        stamps = [round(seconds / time_base) for seconds in times_s]
        # The last frame lasts as long as the one before it.
        stamps.append(2 * stamps[-1] - stamps[-2] if len(stamps) > 1 else stamps[-1] + 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    durations: dict[int, int] = {}
    with av.open(str(path), mode="w", format="mp4") as output:
        stream = None
        for index, rgb in enumerate(frames):
            if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"frames must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
            if stream is None:
                height, width = rgb.shape[:2]
                if height % 2 or width % 2:
                    raise ValueError(f"frames need even height and width, got {height}x{width}")
                stream = output.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.time_base = stream.codec_context.time_base = time_base
                stream.options = {"crf": str(crf), "preset": preset}
                if keyframe_interval:
                    stream.options["g"] = str(keyframe_interval)
                stream.codec_context.colorspace = _COLORSPACES[matrix]
                stream.codec_context.color_range = _LIMITED
                if rotation:
                    stream.set_display_rotation(rotation)
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            image = image.reformat(
                format="yuv420p", dst_colorspace=_COLORSPACES[matrix], dst_color_range=_LIMITED
            )
            image.pts, image.time_base = stamps[index], time_base
            durations[image.pts] = stamps[index + 1] - stamps[index]
            _mux(output, stream.encode(image), durations)
            written += 1
        if stream is None:
            raise ValueError("no frames to write")
        _mux(output, stream.encode(), durations)
    return written
