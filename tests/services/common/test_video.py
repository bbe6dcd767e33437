"""Probe, timelines, frame reading and clip writing on real media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from av.video.frame import PictureType

from services.common.errors import UnreadableVideo
from services.common.video import (
    VideoReader,
    iter_frames,
    probe,
    read_frames,
    write_clip,
    write_frames,
)


def test_probe_measures_bikes(bikes: Path):
    info = probe(bikes)
    assert (info.width, info.height, info.frame_count, info.codec) == (640, 272, 250, "h264")
    assert info.fps == pytest.approx(25.0)
    assert info.duration_s == pytest.approx(10.0)


@pytest.mark.parametrize("content", [b"", b"this is text, not a video\n" * 40])
def test_probe_rejects_non_videos(tmp_path: Path, content: bytes):
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with pytest.raises(UnreadableVideo):
        probe(path)


def test_read_frames_returns_rgb_batch(carphone: Path):
    frames = read_frames(carphone, [0, 60, 10_000])
    assert frames.shape == (3, 144, 176, 3) and frames.dtype.name == "uint8"
    assert (frames[2] == read_frames(carphone, [119])[0]).all()  # clamped to the last frame


def test_write_clip_scales_short_side(bikes: Path, tmp_path: Path):
    written = write_clip(bikes, tmp_path / "c.mp4", 76, 137, short_side=136)
    info = probe(tmp_path / "c.mp4")
    assert written == info.frame_count == 61
    assert (info.width, info.height, info.codec) == (320, 136, "h264")


def test_arrays_scales_every_frame_with_its_index(bikes: Path):
    with VideoReader(bikes) as video:
        frames = list(video.arrays(128, 54))
    assert [index for index, _ in frames] == list(range(250))
    assert frames[0][1].shape == (54, 128, 3) and frames[0][1].dtype.name == "uint8"


@pytest.mark.parametrize(("start", "end"), [(76, 137), (100, 132), (249, 250), (0, 30)])
def test_iter_frames_seeks_to_the_same_frames_as_a_full_decode(
    bikes: Path, start: int, end: int
) -> None:
    # bikes has keyframes at its cuts (0, 30, 76, 137, 187, 242): later starts seek to them.
    seeking = [frame.to_ndarray(format="rgb24") for frame in iter_frames(bikes, start, end)]
    counting = [
        frame.to_ndarray(format="rgb24")
        for index, frame in enumerate(iter_frames(bikes))
        if start <= index < end
    ]
    assert len(seeking) == end - start
    assert all(np.array_equal(a, b) for a, b in zip(seeking, counting, strict=True))


def test_frames_fall_back_to_counting_without_repeating_frames(bikes: Path):
    """A frame whose pts the timeline lacks (odd timestamps) sends the decode back to counting
    from the start; frames already yielded are not yielded again."""
    expected = [f.to_ndarray(format="rgb24") for f in iter_frames(bikes, 76, 137)]
    with VideoReader(bikes) as video:
        video._rank = {pts: i for pts, i in video._rank.items() if i <= 90}  # knows 0-90 only
        got = [frame.to_ndarray(format="rgb24") for _, frame in video.frames(76, 137)]
    assert len(got) == 61
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_timeline_times_a_variable_frame_rate(carphone: Path, tmp_path: Path):
    with VideoReader(carphone) as video:
        frames = [image for _, image in video.arrays(176, 144, "rgb24")][:60]
    # 30 frames at 60 fps, then 30 at 15 fps: 0.5 s + 2.0 s, an average of 24 fps.
    times = [i / 60 for i in range(30)] + [0.5 + i / 15 for i in range(30)]
    write_frames(tmp_path / "vfr.mp4", frames, fps=24, times_s=times)
    with VideoReader(tmp_path / "vfr.mp4") as video:
        timeline = video.timeline
    assert timeline.indexed and timeline.frame_count == 60
    assert timeline.span_s(0, 30) == pytest.approx(0.5)
    assert timeline.span_s(30, 60) == pytest.approx(2.0)
    info = probe(tmp_path / "vfr.mp4")
    assert info.duration_s == pytest.approx(2.5) and info.fps == pytest.approx(24, rel=0.01)


def test_write_clip_keeps_source_timing(carphone: Path, tmp_path: Path):
    """Clip frames carry their source pts rebased: a clip plays the source time it covers,
    also when the rate changes inside it (here 0.5 s of 30 frames, then 2 s of 30)."""
    with VideoReader(carphone) as video:
        frames = [image for _, image in video.arrays(176, 144, "rgb24")][:70]
    times = [i / 60 for i in range(40)] + [40 / 60 + i / 15 for i in range(30)]
    write_frames(tmp_path / "vfr.mp4", frames, fps=24, times_s=times)
    with VideoReader(tmp_path / "vfr.mp4") as video:
        covered = video.timeline.span_s(10, 60)
    assert write_clip(tmp_path / "vfr.mp4", tmp_path / "clip.mp4", 10, 60) == 50
    clip = probe(tmp_path / "clip.mp4")
    assert clip.frame_count == 50
    assert clip.duration_s == pytest.approx(covered, abs=1e-3)  # 30/60 + 20/15 s


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_measured_and_clips_come_out_upright(
    carphone: Path, tmp_path: Path, rotation: int
):
    with VideoReader(carphone) as video:
        upright = [image for _, image in video.arrays(176, 144, "rgb24")][:12]
    # Stored turned clockwise by the rotation that the display matrix turns back.
    stored = [np.ascontiguousarray(np.rot90(image, -rotation // 90)) for image in upright]
    write_frames(tmp_path / "phone.mp4", stored, fps=30, rotation=rotation)
    info = probe(tmp_path / "phone.mp4")
    assert info.rotation == rotation
    assert info.upright_size == (176, 144)
    write_clip(tmp_path / "phone.mp4", tmp_path / "clip.mp4", 0, 12, short_side=0, info=info)
    clip = probe(tmp_path / "clip.mp4")
    assert (clip.width, clip.height, clip.rotation) == (176, 144, 0)
    with VideoReader(tmp_path / "clip.mp4") as video:
        first = next(video.arrays(176, 144, "rgb24"))[1]
    assert np.abs(first.astype(int) - upright[0]).mean() < 8  # the upright picture, re-encoded


def test_a_bt709_source_keeps_its_colours_in_the_clip(bigbuckbunny: Path, tmp_path: Path):
    """Phones record BT.709: the clip is tagged with the source's matrix, or a player (and the
    loader) would read its YUV as BT.601 and shift the colours (by mean colour, which
    compression noise does not move)."""
    footage = read_frames(bigbuckbunny, range(40))
    source = tmp_path / "phone709.mp4"
    write_frames(source, footage, fps=30, matrix="bt709")
    write_clip(source, tmp_path / "clip.mp4", 0, 40, short_side=0)

    def colour(frames: np.ndarray) -> np.ndarray:
        return frames.reshape(-1, 3).mean(axis=0)

    shown = colour(read_frames(source, [20]))
    assert np.abs(shown - colour(footage[20])).max() < 2  # the source reads as it was written
    assert np.abs(colour(read_frames(tmp_path / "clip.mp4", [20])) - shown).max() < 0.6
    # The clip's pixels read as BT.601: the green mean is off by grey levels.
    with VideoReader(tmp_path / "clip.mp4") as clip:
        _, frame = next(clip.frames(20, 21))
        frame.colorspace = 2  # unspecified: BT.601
        assert np.abs(colour(frame.to_ndarray(format="rgb24")) - shown).max() > 2


def _frame_types(path: Path) -> str:
    with VideoReader(path) as video:
        return "".join(PictureType(frame.pict_type).name for _, frame in video.frames())


def test_a_clip_has_its_own_frame_types_whatever_the_source_had(carphone: Path, tmp_path: Path):
    """Phones record without B-frames, and a decoded frame keeps its type, which libx264 would
    obey: the clip must follow its own settings (a fixed pattern of unreferenced B-frames)."""
    phone = tmp_path / "phone.mp4"
    write_clip(carphone, phone, 0, 120, short_side=0, bframes=0)
    assert set(_frame_types(phone)) == {"I", "P"}
    write_clip(phone, tmp_path / "clip.mp4", 0, 120, short_side=0, keyframe_interval=32, bframes=7)
    types = _frame_types(tmp_path / "clip.mp4")
    assert types.startswith("IBBBBBBBP") and types.count("B") >= 90
    assert types.count("I") == 4  # every 32 frames, not where the source had its keyframes
