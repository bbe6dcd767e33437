"""List formats of the reference: raw-frame lines, hybrid pre-training lists, SSv2's label-last
lists (VideoMAE V2 ``dataset/datasets.py``: ``HybridVideoMAE`` reads ``path start total`` with
total -1 for a video file; ``RawFrameClsDataset`` reads ``dir total label``)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from services.common.records import Rejection
from services.trainer.data import (
    FrameFolders,
    MultiViewDataset,
    VideoDataset,
    VideoEntry,
    read_list,
)
from services.trainer.recipes import get_recipe


def _frame_folder(folder: Path, count: int, first: int = 1) -> Path:
    """Solid grey frames whose value tells their number: frame k is 20 * k."""
    folder.mkdir(parents=True)
    for number in range(first, first + count):
        Image.new("RGB", (24, 16), (20 * number,) * 3).save(folder / f"img_{number:05d}.jpg")
    return folder


def test_pretraining_lines_are_path_start_total() -> None:
    text = "k400/a.mp4 0 -1\nssv2/frames/12 1 48\nssv2/frames/13,5,30\n"
    assert read_list(text, "/data", labelled=False) == [
        VideoEntry("/data/k400/a.mp4", 0),
        VideoEntry("/data/ssv2/frames/12", 0, frames=48, start=1),
        VideoEntry("/data/ssv2/frames/13", 0, frames=30, start=5),
    ]


def test_labelled_lines_put_the_label_last() -> None:
    # The reference's SSv2 raw-frame list: dir total label. Label 12, not the 48 frames.
    text = "frames/1 48 12\nvideos/2.webm 40 7\nvideos/3.mp4 3\n"
    assert read_list(text, labelled=True) == [
        VideoEntry("frames/1", 12, frames=48),
        VideoEntry("videos/2.webm", 7),
        VideoEntry("videos/3.mp4", 3),
    ]


def test_a_pretraining_list_is_refused_as_labels() -> None:
    with pytest.raises(ValueError, match=r"line 2 is a pre-training line"):
        read_list("a.mp4 1\nb.mp4 0 -1\n", labelled=True)
    with pytest.raises(ValueError, match=r"line 1 has 4 fields"):
        read_list("a.mp4 0 -1 3\n", labelled=False)


def test_frame_folders_are_read_frame_by_frame(tmp_path: Path) -> None:
    folder = _frame_folder(tmp_path / "frames" / "v1", 10)
    (entry,) = read_list(f"{folder} 10 2\n", labelled=True)
    # The validation window of 4 frames at stride 2 over 10: linspace(1, 9, 4) clipped to 8,
    # indices 1, 3, 6, 8 -> files 2, 4, 7, 9.
    dataset = MultiViewDataset([entry], lambda f: [torch.from_numpy(f)], 4, 2, 1, validation=True)
    views, label, _ = dataset[0]
    assert label == 2 and views.shape == (1, 4, 16, 24, 3)
    np.testing.assert_allclose(views[0, :, 0, 0, 0].numpy(), [40, 80, 140, 180], atol=3)
    # A hybrid line names its first frame; a template names the files.
    other = _frame_folder(tmp_path / "frames" / "v2", 6, first=0)
    (entry,) = read_list(f"{other} 0 6\n", labelled=False)
    dataset = MultiViewDataset([entry], lambda f: [torch.from_numpy(f)], 2, 1, 1)
    # One test view: the reference's first, from frame 0 (file 0).
    np.testing.assert_allclose(dataset[0][0][0, :, 0, 0, 0].numpy(), [0, 20], atol=3)
    missing = MultiViewDataset(
        [entry], lambda f: [torch.from_numpy(f)], 2, 1, 1, folders=FrameFolders("f{:03d}.png")
    )
    assert isinstance(missing[0], Rejection) and missing[0].reason == "UNREADABLE_VIDEO"


def test_hybrid_lists_sample_something_something_at_stride_2() -> None:
    strides = get_recipe("vit_b_pretrain_800e").data.stride_by_path
    dataset = VideoDataset(
        [], lambda f: torch.zeros(1), 16, 4, strides=strides, folders=FrameFolders(), pretrain=True
    )
    assert dataset.stride_of("/data/hybrid/SomethingV2/frames/77") == 2
    assert dataset.stride_of("s3://bucket/20bn-something-something-v2/8.webm") == 2
    assert dataset.stride_of("/data/hybrid/k710/abc.mp4") == 4
    window = dataset.frame_indices("/data/ssv2/something/1", 300, random.Random(0))
    assert np.all(np.diff(window) == 2)
