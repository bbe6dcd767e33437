"""The reference's pixel operations (``data.pixels="reference"``, the default): plain bilinear
resizing in fine-tuning and testing (VideoMAE V2 ``dataset/`` transforms: ``F.interpolate``
bilinear, OpenCV ``INTER_LINEAR``), RandAugment with grey fill and bicubic interpolation
(``create_random_augment``, ``--train_interpolation bicubic``), cube erasing with per-frame
noise (``random_erasing.py``, ``mode="pixel"``)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from services.trainer.recipes import RECIPES, apply_overrides, get_recipe
from services.trainer.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CubeErasing,
    VideoRandAugment,
    eval_views,
)


def test_reference_is_every_recipes_default() -> None:
    assert {get_recipe(name).data.pixels for name in RECIPES} == {"reference"}
    with pytest.raises(ValueError, match=r"data\.pixels"):
        apply_overrides(get_recipe("k400_finetune"), ["data.pixels=pil"])


def test_test_resize_is_plain_bilinear() -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 64, 96, 3), dtype=np.uint8)
    (view,) = eval_views(frames, 16, 1, "reference")
    # The reference: bilinear without antialiasing (half-pixel centres) to 16 x 24, centre crop.
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    expected = F.interpolate(video, size=(16, 24), mode="bilinear", align_corners=False)
    expected = expected.round().clamp(0, 255)[..., 4:20] / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    got = view.permute(1, 0, 2, 3) * std + mean  # back to [0, 1], (T, C, H, W)
    assert torch.allclose(got, expected, atol=1.5 / 255)
    (smooth,) = eval_views(frames, 16, 1, "torchvision")
    assert not torch.allclose(smooth, view, atol=0.1), "antialiasing averages the noise away"


def test_rand_augment_fill_and_interpolation() -> None:
    reference = VideoRandAugment("rand-m7-n4-mstd0.5-inc1", "reference").augment.ops[0]
    assert reference.kwargs == {"fillcolor": (128, 128, 128), "resample": 3}  # PIL bicubic
    timm = VideoRandAugment("rand-m7-n4-mstd0.5-inc1", "torchvision").augment.ops[0]
    assert timm.kwargs["fillcolor"] == (124, 116, 104) and len(timm.kwargs["resample"]) == 2


def test_cube_erasing_shares_the_box_not_the_noise() -> None:
    random.seed(3)
    torch.manual_seed(3)
    video = CubeErasing(1.0)(torch.zeros(4, 3, 32, 32))  # T, C, H, W
    erased = video != 0
    assert erased.any() and torch.equal(erased, erased[:1].expand_as(erased)), "one box"
    area = erased[0, 0].sum().item() / (32 * 32)
    assert 0.01 <= area <= 0.4
    assert not torch.equal(video[0], video[1]), "noise drawn per frame"
    assert torch.equal(CubeErasing(0.0)(torch.zeros(2, 3, 8, 8)), torch.zeros(2, 3, 8, 8))
