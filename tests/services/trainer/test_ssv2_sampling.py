"""Something-Something V2 frame sampling against the reference: VideoMAE V2
(OpenGVLab/VideoMAEv2 at 29eab1e8a588d1b3ec0cdec7b03a86cca491b74b). ``dataset/build.py:146``
builds ``RawFrameClsDataset`` for SSV2 with ``clip_len=1, num_segment=num_frames``; its
``load_frame`` (``dataset/datasets.py:561-616``) samples training, validation and test frames,
``__getitem__`` (``:489-501``) cuts the test views, ``scripts/finetune/vit_g_ssv2_ft.sh`` sets
``--num_frames 16 --test_num_segment 2 --test_num_crop 3``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from services.trainer.data import (
    MultiViewDataset,
    VideoDataset,
    VideoEntry,
    read_list,
    train_segments,
    val_segments,
    view_windows,
)
from services.trainer.recipes import get_recipe


def test_training_takes_one_random_frame_from_each_of_16_segments() -> None:
    # datasets.py:585-598: a 48-frame video is 16 segments of 48 // 16 = 3 frames, segment i
    # gives i * 3 + randint(3), so frame i of the clip lies in [3 i, 3 i + 2].
    draws = np.array([train_segments(48, 16, random.Random(seed)) for seed in range(200)])
    lows = np.arange(16) * 3
    assert np.all((draws >= lows) & (draws <= lows + 2))
    assert set(np.unique(draws - lows)) == {0, 1, 2}, "every offset inside a segment is drawn"
    assert len({tuple(row) for row in draws}) > 100, "random per item, not a fixed pattern"
    # 50 frames: still 3-frame segments (floor), frames 48 and 49 never drawn.
    assert max(max(train_segments(50, 16, random.Random(s))) for s in range(200)) == 47
    # datasets.py:606-608: fewer than 16 frames, [0] * (16 - n) + range(n).
    assert train_segments(10, 16, random.Random(0)) == [0] * 6 + list(range(10))
    assert train_segments(16, 16, random.Random(0)) == list(range(16))


def test_validation_takes_the_middle_of_each_segment() -> None:
    # datasets.py:588-593: i * (n // 16) + (n // 16) // 2.
    assert val_segments(48, 16) == [3 * i + 1 for i in range(16)]
    assert val_segments(100, 16) == [6 * i + 3 for i in range(16)]
    assert val_segments(10, 16) == [0] * 6 + list(range(10))
    assert view_windows(48, 16, 2, 1, tsn=True, validation=True) == [val_segments(48, 16)]


def test_test_views_sit_at_0_and_half_a_segment() -> None:
    # datasets.py:565-574: tick = 48 / 16; view t takes int(t * tick / 2 + tick * x).
    first, second = view_windows(48, 16, 2, 2, tsn=True)
    assert first == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45]
    assert second == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46]
    # The reference reads both views' indices sorted, then view t as buffer[t::2]
    # (datasets.py:492-501): the same frames, for every length.
    for length in range(1, 400):
        tick = length / 16
        merged = sorted(int(t * tick / 2 + tick * x) for t in range(2) for x in range(16))
        assert view_windows(length, 16, 2, 2, tsn=True) == [merged[0::2], merged[1::2]]


def _numbered_frames(folder: Path, count: int) -> Path:
    """Solid grey frames whose value tells their index: frame k is 5 * k."""
    folder.mkdir(parents=True)
    for k in range(count):
        Image.new("RGB", (8, 8), (5 * k,) * 3).save(folder / f"img_{k + 1:05d}.jpg")
    return folder


def test_validation_and_test_read_their_frames(tmp_path: Path) -> None:
    folder = _numbered_frames(tmp_path / "v", 48)
    (entry,) = read_list(f"{folder} 48 3\n", labelled=True)

    def frames(validation: bool, segments: int) -> list[list[int]]:
        dataset = MultiViewDataset(
            [entry], lambda f: [torch.from_numpy(f)], 16, 2, segments, tsn=True,
            validation=validation,
        )  # fmt: skip
        views = dataset[0][0][:, :, 0, 0, 0].numpy()
        return np.rint(views / 5).astype(int).tolist()

    assert frames(True, 1) == [val_segments(48, 16)]
    assert frames(False, 2) == view_windows(48, 16, 2, 2, tsn=True)


def test_ssv2_recipes_sample_segments_in_training() -> None:
    for name in ("ssv2_finetune", "vit_g_ssv2_finetune"):
        data = get_recipe(name).data
        assert data.tsn_segments and data.test_segments == 2 and data.test_crops == 3
        assert not data.flip, "datasets.py:541: no flip for SSV2"
    dataset = VideoDataset(
        [VideoEntry("unused.mp4", 0)], lambda frames: torch.zeros(1), 16, 2, tsn=True
    )
    indices = dataset.frame_indices("unused.mp4", 48, random.Random(0))
    assert [i // 3 for i in indices] == list(range(16)), "segments, not a stride-2 window"
