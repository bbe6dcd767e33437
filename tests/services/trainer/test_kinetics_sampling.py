"""Kinetics/UCF101/HMDB51-style frame sampling against the reference's arithmetic.

The ``upstream_*`` helpers restate OpenGVLab/VideoMAEv2 at
29eab1e8a588d1b3ec0cdec7b03a86cca491b74b with numpy, for ``num_segment=1`` as
``dataset/build.py`` (lines 16-34, 50-203) builds every such set: ``VideoClsDataset.load_video``
and ``__getitem__`` (``dataset/datasets.py:260-321``, ``:149-199``) and ``HybridVideoMAE``'s
``_sample_train_indices`` / ``get_frame_id_list`` (``dataset/pretrain_datasets.py:290-325``).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.trainer.data import (
    VideoDataset,
    pretrain_window,
    train_window,
    val_window,
    view_windows,
)

LENGTHS = (1, 3, 30, 63, 64, 65, 100, 300)
SHAPES = ((16, 4), (16, 2), (8, 8), (4, 1), (1, 4))  # (clip_len, frame_sample_rate)


def upstream_clip(length: int, clip_len: int, rate: int, end_idx: int | None) -> list[int]:
    """``load_video`` outside test mode (datasets.py:293-316); ``end_idx`` as drawn there."""
    converted_len = int(clip_len * rate)
    seg_len = length
    if seg_len <= converted_len:
        index = np.linspace(0, seg_len, num=seg_len // rate)
        index = np.concatenate((index, np.ones(clip_len - seg_len // rate) * seg_len))
        index = np.clip(index, 0, seg_len - 1).astype(np.int64)
    else:
        assert end_idx is not None
        str_idx = end_idx - converted_len
        index = np.linspace(str_idx, end_idx, num=clip_len)
        index = np.clip(index, str_idx, end_idx - 1).astype(np.int64)
    return index.tolist()


def upstream_val_end(length: int, clip_len: int, rate: int) -> int:
    return (clip_len * rate + length) // 2  # datasets.py:308-309


def upstream_test_views(length: int, clip_len: int, rate: int, segments: int) -> list[list[int]]:
    """Test mode (datasets.py:283-287 decode, 185-197 temporal crop), as raw frame numbers."""
    all_index = list(range(0, length, rate))
    while len(all_index) < clip_len:
        all_index.append(all_index[-1])
    buffer = np.array(all_index)  # the decoded frames, by their number
    temporal_step = max(1.0 * (buffer.shape[0] - clip_len) / (segments - 1), 0)
    views = []
    for chunk_nb in range(segments):
        temporal_start = int(chunk_nb * temporal_step)
        views.append(buffer[temporal_start : temporal_start + clip_len].tolist())
    return views


def upstream_pretrain(length: int, new_length: int, new_step: int, draw: int | None) -> list[int]:
    """``_sample_train_indices`` (one segment, no jitter) with ``np.random.randint`` returning
    ``draw``, then ``get_frame_id_list`` (pretrain_datasets.py:290-325)."""
    skip_length = new_length * new_step
    average_duration = (length - skip_length + 1) // 1
    if average_duration > 0:
        assert draw is not None and 0 <= draw < average_duration
        offsets = np.multiply([0], average_duration) + np.array([draw])
    elif length > max(1, skip_length):  # unreachable with one segment
        raise AssertionError
    else:
        offsets = np.zeros((1,))
    offsets, skip_offsets = offsets + 1, np.zeros(skip_length // new_step, dtype=int)
    frame_id_list = []
    for seg_ind in offsets:
        offset = int(seg_ind)
        for i, _ in enumerate(range(0, skip_length, new_step)):
            if offset + skip_offsets[i] <= length:
                frame_id = offset + skip_offsets[i] - 1
            else:
                frame_id = offset - 1
            frame_id_list.append(frame_id)
            if offset + new_step < length:
                offset += new_step
    return frame_id_list


class _Fixed(random.Random):
    """A ``random.Random`` whose ``randrange`` returns ``value`` after checking the range
    against the reference's ``np.random.randint`` bounds."""

    def __init__(self, value: int, low: int, high: int) -> None:
        super().__init__(0)
        self.value, self.bounds = value, (low, high)

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:  # type: ignore[override]
        assert (start, stop) == self.bounds or ((0, start) == self.bounds and stop is None)
        return self.value


@pytest.mark.parametrize(("clip_len", "rate"), SHAPES)
def test_training_window_is_the_references_for_every_end(clip_len: int, rate: int) -> None:
    for length in LENGTHS:
        span = clip_len * rate
        if length <= span:  # no draw: the short-video branch (datasets.py:299-306)
            ours = train_window(length, clip_len, rate, random.Random(0))
            assert ours == upstream_clip(length, clip_len, rate, None)
            continue
        for end_idx in range(span, length):  # np.random.randint(converted_len, seg_len)
            ours = train_window(length, clip_len, rate, _Fixed(end_idx, span, length))
            assert ours == upstream_clip(length, clip_len, rate, end_idx), (length, end_idx)


def test_training_window_steps_and_draws() -> None:
    # 16 x 4 over 300 frames ending at 200: linspace(136, 200, 16), steps of 64/15 ~ 4.27.
    ours = train_window(300, 16, 4, _Fixed(200, 64, 300))
    assert ours[:5] == [136, 140, 144, 148, 153] and ours[-1] == 199
    # A 30-frame video: linspace(0, 30, 7) and its last frame repeated (datasets.py:300-306).
    assert train_window(30, 16, 4, random.Random(0)) == [0, 5, 10, 15, 20, 25] + [29] * 10
    # The draw is uniform over the same range as np.random.randint(64, 65): only 64.
    assert {train_window(65, 16, 4, random.Random(s))[0] for s in range(20)} == {0}


@pytest.mark.parametrize(("clip_len", "rate"), SHAPES)
def test_validation_window_is_the_references(clip_len: int, rate: int) -> None:
    for length in LENGTHS:
        end_idx = upstream_val_end(length, clip_len, rate)
        expected = upstream_clip(length, clip_len, rate, end_idx)
        assert val_window(length, clip_len, rate) == expected, length
        assert view_windows(length, clip_len, rate, 1, validation=True) == [expected]


@pytest.mark.parametrize("segments", [2, 3, 5, 10])
@pytest.mark.parametrize(("clip_len", "rate"), SHAPES)
def test_test_views_are_the_references(segments: int, clip_len: int, rate: int) -> None:
    for length in LENGTHS:
        expected = upstream_test_views(length, clip_len, rate, segments)
        assert view_windows(length, clip_len, rate, segments) == expected, length


def test_test_views_examples() -> None:
    # 100 frames, 16 x 4, 5 views: a 25-frame buffer, starts int(k * 9 / 4) = 0, 2, 4, 6, 9.
    views = view_windows(100, 16, 4, 5)
    assert [v[0] for v in views] == [0, 8, 16, 24, 36] and views[-1][-1] == 96
    # 30 frames: 8 decoded, the last (28) repeated; every view is the same padded buffer.
    assert view_windows(30, 16, 4, 2) == [[0, 4, 8, 12, 16, 20, 24, 28] + [28] * 8] * 2
    # One segment, where the reference divides by zero: its first view.
    assert view_windows(100, 16, 4, 1) == [view_windows(100, 16, 4, 5)[0]]


@pytest.mark.parametrize(("clip_len", "rate"), SHAPES)
def test_pretraining_window_is_the_references(clip_len: int, rate: int) -> None:
    for length in LENGTHS:
        room = length - clip_len * rate + 1
        if room <= 0:  # no draw: offsets = np.zeros (pretrain_datasets.py:302-303)
            ours = pretrain_window(length, clip_len, rate, random.Random(0))
            assert ours == upstream_pretrain(length, clip_len, rate, None), length
            continue
        for draw in range(room):  # np.random.randint(average_duration, size=1)
            ours = pretrain_window(length, clip_len, rate, _Fixed(draw, 0, room))
            assert ours == upstream_pretrain(length, clip_len, rate, draw), (length, draw)


def test_pretraining_window_quirks() -> None:
    # Short video: steps stop once the next 1-based offset would reach the length.
    short = pretrain_window(30, 16, 4, random.Random(0))
    assert short == [0, 4, 8, 12, 16, 20, 24, 28] + [28] * 8
    # Stride 1 at the very end: the reference never reaches the last frame.
    assert pretrain_window(20, 4, 1, _Fixed(16, 0, 17)) == [16, 17, 18, 18]


def test_datasets_pick_the_stage_sampler() -> None:
    def dataset(pretrain: bool) -> VideoDataset:
        return VideoDataset([], lambda f: f, 16, 4, pretrain=pretrain)

    for seed in range(5):
        assert dataset(True).frame_indices("a.mp4", 300, random.Random(seed)) == (
            pretrain_window(300, 16, 4, random.Random(seed))
        )
        assert dataset(False).frame_indices("a.mp4", 300, random.Random(seed)) == (
            train_window(300, 16, 4, random.Random(seed))
        )
