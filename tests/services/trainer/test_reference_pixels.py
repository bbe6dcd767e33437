"""The reference's pixel operations (``data.pixels="reference"``, the default), checked against
VideoMAE V2 (OpenGVLab/VideoMAEv2 at 29eab1e8a588d1b3ec0cdec7b03a86cca491b74b):

- plain bilinear resizing in fine-tuning and testing: ``dataset/video_transforms.py:529-561``
  (``F.interpolate(mode="bilinear")``), ``dataset/functional.py:27-75`` (OpenCV
  ``INTER_LINEAR`` to ``int(size * long / short)``);
- the test's crops: ``dataset/datasets.py:489-501`` (``spatial_step = (long - short_side) /
  (test_num_crop - 1)``, crop ``k`` at ``int(k * spatial_step)``, along the height when
  ``H >= W``), validation's ``CenterCrop`` at ``int(round((long - size) / 2.))``
  (``dataset/video_transforms.py:1143``);
- RandAugment: ``create_random_augment`` (``dataset/video_transforms.py:605-637``:
  ``translate_const = int(224 * 0.45)``, ``--train_interpolation bicubic``, no ``img_mean``, so
  ``dataset/rand_augment.py:38`` grey fill), the ``inc1`` ops (``rand_augment.py:396-412``);
- cube erasing with per-frame noise: ``dataset/random_erasing.py:115-152`` (``cube=True``,
  ``mode="pixel"``, one box: ``--recount 1``).
"""

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


def _denormalised(view: torch.Tensor) -> torch.Tensor:
    """A normalised ``(C, T, H, W)`` view back to ``[0, 255]``, ``(T, H, W, C)``."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1), torch.tensor(IMAGENET_STD)
    return ((view * std.view(3, 1, 1, 1) + mean) * 255).permute(1, 2, 3, 0)


def test_test_crops_sit_at_the_reference_offsets() -> None:
    rng = np.random.default_rng(1)
    # Short side already 224 (no resize): long side 299, step 75 / 2 = 37.5, crops at
    # int(0), int(37.5), int(75.0); the single validation crop at round(37.5) = 38.
    for height, width in ((224, 299), (299, 224)):
        frames = rng.integers(0, 256, size=(2, height, width, 3), dtype=np.uint8)
        views = eval_views(frames, 224, 3)
        (centre,) = eval_views(frames, 224, 1)
        for view, start in zip([*views, centre], (0, 37, 75, 38), strict=True):
            rows = frames[:, start : start + 224]
            cut = rows if height > width else frames[:, :, start : start + 224]
            assert torch.allclose(_denormalised(view), torch.from_numpy(cut).float(), atol=1e-3)
    # A square frame: every crop is the whole frame (the reference cuts along the height).
    square = rng.integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    assert all(torch.equal(v, eval_views(square, 224, 1)[0]) for v in eval_views(square, 224, 3))


def test_test_resize_is_opencvs_to_a_floored_long_side() -> None:
    cv2 = pytest.importorskip("cv2")
    frames = np.random.default_rng(2).integers(0, 256, size=(2, 240, 320, 3), dtype=np.uint8)
    # int(224 * 320 / 240) = 298 (298.67 floored), step (298 - 224) / 2 = 37: crops 0, 37, 74.
    resized = np.stack([cv2.resize(f, (298, 224), interpolation=cv2.INTER_LINEAR) for f in frames])
    for view, start in zip(eval_views(frames, 224, 3), (0, 37, 74), strict=True):
        expected = torch.from_numpy(resized[:, :, start : start + 224]).float()
        # OpenCV's fixed-point weights round differently by at most one grey level.
        assert torch.allclose(_denormalised(view), expected, atol=1.01)
    for pixels in ("reference", "torchvision"):
        (view,) = eval_views(frames[:, :, :319], 224, 1, pixels)  # 297.87 -> 297
        assert view.shape == (3, 2, 224, 224)


def test_rand_augment_fill_and_interpolation() -> None:
    augment = VideoRandAugment("rand-m7-n4-mstd0.5-inc1", "reference").augment
    reference = augment.ops[0]
    assert reference.kwargs == {"fillcolor": (128, 128, 128), "resample": 3}  # PIL bicubic
    # rand_augment.py:396-412, the ops of "inc1"; m7, n4, mstd 0.5; translate_const 100.
    assert [op.name for op in augment.ops] == [
        "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
        "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
        "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
        "TranslateYRel",
    ]  # fmt: skip
    assert augment.num_layers == 4 and augment.choice_weights is None
    assert {(op.prob, op.magnitude, op.magnitude_std) for op in augment.ops} == {(0.5, 7, 0.5)}
    assert reference.hparams["translate_const"] == int(224 * 0.45)
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
