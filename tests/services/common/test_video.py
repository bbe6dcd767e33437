"""Probe, frame reading and clip writing on real media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.errors import UnreadableVideo
from services.common.video import iter_arrays, iter_frames, probe, read_frames, write_clip


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


def test_iter_arrays_scales_every_frame(bikes: Path):
    frames = list(iter_arrays(bikes, 128, 54))
    assert len(frames) == 250
    assert frames[0].shape == (54, 128, 3) and frames[0].dtype.name == "uint8"


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


def test_iter_frames_falls_back_to_counting_without_repeating_frames(bikes: Path, monkeypatch):
    """A frame whose pts the index lacks (odd timestamps) sends the decode back to counting from
    the start; frames already yielded are not yielded again."""
    from services.common import video

    located = video._keyframe_before

    def partial_index(container, stream, frame_index):  # knows frames up to 90 only
        pts, rank = located(container, stream, frame_index)
        return pts, {p: i for p, i in rank.items() if i <= 90}

    expected = [f.to_ndarray(format="rgb24") for f in iter_frames(bikes, 76, 137)]
    monkeypatch.setattr(video, "_keyframe_before", partial_index)
    got = [f.to_ndarray(format="rgb24") for f in iter_frames(bikes, 76, 137)]
    assert len(got) == 61
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
