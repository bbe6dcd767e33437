"""Something-Something V2 frame sampling against the reference's ``SSVideoClsDataset`` (built
by VideoMAE V2 ``dataset/datasets.py`` with ``clip_len=1, num_segment=num_frames``)."""

from __future__ import annotations

import random

import numpy as np
import torch

from services.trainer.data import VideoDataset, VideoEntry, train_segments, view_windows
from services.trainer.recipes import get_recipe


def test_training_takes_one_random_frame_from_each_of_16_segments() -> None:
    # A 48-frame video: 16 segments of 48 // 16 = 3 frames; the reference draws
    # i * 3 + randint(3) for segment i.
    draws = np.array([train_segments(48, 16, random.Random(seed)) for seed in range(200)])
    segment_of_frame = draws // 3
    assert np.array_equal(segment_of_frame, np.broadcast_to(np.arange(16), draws.shape))
    assert set(np.unique(draws % 3)) == {0, 1, 2}, "every offset inside a segment is drawn"
    assert len({tuple(row) for row in draws}) > 100, "random per item, not a fixed pattern"
    # Shorter than 16 frames: the reference's zeros.
    assert train_segments(10, 16, random.Random(0)) == [0] * 16


def test_test_views_sit_at_0_and_half_a_segment() -> None:
    # The reference's 2-view test: int(tick * x) and int(tick / 2 + tick * x), tick = 48 / 16.
    first, second = view_windows(48, 16, 2, 2, tsn=True)
    assert first == [3 * x for x in range(16)]
    assert second == [int(1.5 + 3 * x) for x in range(16)]
    # Validation: one fixed view, the same on every pass.
    assert view_windows(48, 16, 2, 1, tsn=True) == [first]


def test_ssv2_recipes_sample_segments_in_training() -> None:
    for name in ("ssv2_finetune", "vit_g_ssv2_finetune"):
        data = get_recipe(name).data
        assert data.tsn_segments and data.test_segments == 2 and data.test_crops == 3
    dataset = VideoDataset(
        [VideoEntry("unused.mp4", 0)], lambda frames: torch.zeros(1), 16, 2, tsn=True
    )
    indices = dataset.frame_indices("unused.mp4", 48, random.Random(0))
    assert [i // 3 for i in indices] == list(range(16)), "segments, not a stride-2 window"
