"""Video augmentation, applied consistently across the frames of a clip.

A clip moves through these as a uint8 tensor ``(T, C, H, W)`` (frames as a batch, which is how
torchvision's v2 transforms draw one set of parameters for all of them) and leaves as a float
``(C, T, H, W)`` normalised with the ImageNet mean and std, the model's input layout.

Pre-training uses the reference multi-scale crop (scales [1, .875, .75, .66], fixed offsets, no
flip); fine-tuning uses random-resized crop, flip, RandAugment and random erasing, then mixup /
cutmix with label smoothing on the batch. Testing takes evenly spaced crops along the long side
after resizing the short side to the crop size, at the reference's sizes and offsets (floored
long side, crops at ``int(k * step)``) in both flavours.

Pixel operations come in two flavours (``data.pixels``). ``reference`` (the default, for
reproducing the paper) does what the VideoMAE V2 reference's ``dataset/`` transforms do;
``torchvision`` uses torchvision's and timm's defaults. The differences, all in fine-tuning and
testing:

- resizing of the random-resized crop and of the test's short side: plain bilinear (the
  reference's ``F.interpolate(mode="bilinear")`` and OpenCV ``INTER_LINEAR``) versus
  antialiased bilinear. Pre-training's multi-scale crop is antialiased in both: the reference
  resizes PIL images there, and PIL's bilinear filter antialiases. Two deviations remain in
  ``reference``, each of at most one grey level: the crop is resized as uint8 frames before
  normalising (the reference resizes the normalised float clip), and OpenCV's fixed-point
  weights round the test resize differently from torch's;
- RandAugment's fill of uncovered pixels and interpolation: grey (128, 128, 128) and bicubic
  (the reference's ``create_random_augment`` with ``--train_interpolation bicubic``) versus
  the ImageNet mean and a random choice of bilinear and bicubic (timm's defaults);
- random erasing: one box in every frame with per-pixel noise drawn for each frame (the
  reference's cube erasing, ``mode="pixel"``) versus torchvision's one box and one noise patch
  shared by all frames.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup
from timm.data.auto_augment import rand_augment_transform
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIXEL_OPS",
    "CubeErasing",
    "Frames",
    "MultiScaleCrop",
    "PretrainAugment",
    "VideoRandAugment",
    "build_mixup",
    "eval_views",
    "finetune_transform",
    "mix_batch",
    "normalize",
    "pretrain_transform",
    "val_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[np.ndarray], torch.Tensor]

PixelOps = Literal["reference", "torchvision"]
PIXEL_OPS: tuple[PixelOps, ...] = ("reference", "torchvision")


def _frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> uint8 ``(T, 3, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def normalize(video: torch.Tensor) -> torch.Tensor:
    """uint8 ``(T, C, H, W)`` -> normalised float ``(C, T, H, W)``, on the video's device.

    ``(x / 255 - mean) / std`` as one multiply-add on a contiguous copy: resized frames come
    channels-last, and normalising them through the permuted view costs ten times as much.
    """
    std = torch.tensor(IMAGENET_STD, device=video.device).view(3, 1, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=video.device).view(3, 1, 1, 1)
    out = video.permute(1, 0, 2, 3).contiguous().float()
    return out.mul_(1 / (255 * std)).add_(-mean / std)


class MultiScaleCrop:
    """The reference ``GroupMultiScaleCrop``: crop sides from ``scales`` x short side.

    Width and height scales differ by at most one step (max_distort 1) and the crop sits at one
    of 13 fixed offsets (corners, centre, quarter points: ``more_fix_crop``), then resizes to
    ``size``.
    """

    def __init__(self, size: int, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66)) -> None:
        self.size = size
        self.scales = tuple(scales)

    def draw(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A crop ``(top, left, height, width)`` of a ``height`` x ``width`` frame, drawn from
        ``random``."""
        base = min(height, width)
        sides = [int(base * s) for s in self.scales]
        sides = [self.size if abs(s - self.size) < 3 else s for s in sides]
        pairs = [
            (w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1
        ]
        crop_w, crop_h = random.choice(pairs)
        ws, hs = (width - crop_w) // 4, (height - crop_h) // 4
        grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0)]
        grid += [(1, 1), (3, 1), (1, 3), (3, 3)]
        left, top = random.choice([(x * ws, y * hs) for x, y in grid])
        return top, left, crop_h, crop_w

    def crop(self, video: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
        top, left, height, width = box
        video = video[..., top : top + height, left : left + width]
        return F.resize(video, [self.size, self.size], antialias=True)

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return self.crop(video, self.draw(*video.shape[-2:]))


@dataclass(slots=True)
class Frames:
    """Decoded clips waiting for ``PretrainAugment.apply_batch``: each video's uint8
    ``(T, H, W, 3)`` frames and the ``(num_sample, 5)`` augmentations drawn for it."""

    videos: list[torch.Tensor]
    params: list[torch.Tensor]

    def pin_memory(self) -> Frames:
        return Frames([v.pin_memory() for v in self.videos], [p.pin_memory() for p in self.params])


class PretrainAugment:
    """Pre-training's multi-scale crop, flip and normalisation in two halves: ``draw`` picks
    a clip's crop and flip from ``random`` (in the loader worker, under the item's seed) and
    ``apply`` cuts them from the decoded frames, on the CPU in the worker or batched on the
    accelerator. Both paths run the same operations on the same draws, so a seed gives the
    same clips either way.

    A draw is ``(top, left, height, width, flip)``.
    """

    def __init__(self, size: int, scales: Sequence[float], flip: bool) -> None:
        self.multi_scale = MultiScaleCrop(size, scales)
        self.flip = flip

    def draw(self, height: int, width: int) -> torch.Tensor:
        box = self.multi_scale.draw(height, width)
        flipped = self.flip and random.random() < 0.5
        return torch.tensor([*box, int(flipped)])

    def clip(self, frames: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` frames and one draw -> float ``(C, T, size, size)`` on the
        frames' device."""
        *box, flipped = draw.tolist()
        clip = self.multi_scale.crop(frames.permute(0, 3, 1, 2), box)
        return normalize(F.horizontal_flip(clip) if flipped else clip)

    def apply(self, frames: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` frames and ``(S, 5)`` draws -> float ``(S, C, T, size, size)``
        on the frames' device."""
        return torch.stack([self.clip(frames, draw) for draw in params])

    def apply_batch(self, batch: Frames, device: torch.device) -> torch.Tensor:
        """A loader batch's clips ``(sum S, C, T, size, size)`` on ``device``, in the order the
        CPU path's collate gives them (video by video, each video's samples in turn)."""
        return torch.cat(
            [
                self.apply(video.to(device, non_blocking=True), params)
                for video, params in zip(batch.videos, batch.params, strict=True)
            ]
        )


_RAND_AUGMENT_PARAMS = {
    # translate_const: the reference's int(224 * 0.45), timm's default for 224 crops.
    "reference": {"translate_const": 100, "img_mean": (128, 128, 128), "interpolation": 3},
    "torchvision": {"translate_const": 100, "img_mean": (124, 116, 104)},
}
"""timm RandAugment hyper-parameters per ``data.pixels`` (3 is PIL's bicubic)."""


class VideoRandAugment:
    """timm's RandAugment with the same operations and magnitudes on every frame.

    timm draws its choices from ``random`` and ``numpy.random``; re-seeding both with one value
    before each frame replays the same draw, which is what makes it a video augmentation.
    ``pixels`` picks the fill and interpolation (see the module docstring).
    """

    def __init__(self, config: str, pixels: PixelOps = "reference") -> None:
        self.augment = rand_augment_transform(config, dict(_RAND_AUGMENT_PARAMS[pixels]))

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        seed = random.getrandbits(32)
        out = []
        for frame in video.permute(0, 2, 3, 1).numpy():
            random.seed(seed)
            np.random.seed(seed)
            out.append(np.asarray(self.augment(Image.fromarray(frame))))
        random.seed(seed + 1)
        return _frames_to_tensor(np.stack(out))


def pretrain_transform(size: int, scales: Sequence[float], flip: bool) -> Transform:
    """Multi-scale crop (optionally a flip) and normalisation: the pre-training pipeline on
    the CPU (``PretrainAugment`` draws and applies it)."""
    augment = PretrainAugment(size, scales, flip)

    def apply(frames: np.ndarray) -> torch.Tensor:
        draw = augment.draw(*frames.shape[1:3])
        return augment.clip(torch.from_numpy(np.ascontiguousarray(frames)), draw)

    return apply


class CubeErasing:
    """The reference's random erasing of a clip: one box, the same in every frame, filled with
    standard-normal noise drawn per pixel and per frame (``mode="pixel"``, one box).

    The box covers 2% to 1/3 of the frame with a log-uniform aspect ratio in [0.3, 1/0.3], as
    timm's and the reference's ``RandomErasing``; drawn from ``random`` and torch's generator.

    Args:
        probability: the chance that a clip is erased.
    """

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """``video``: a normalised ``(T, C, H, W)`` clip, erased in place and returned."""
        if random.random() > self.probability:
            return video
        frames, channels, height, width = video.shape
        log_ratio = (math.log(0.3), math.log(1 / 0.3))
        for _ in range(100):
            area = random.uniform(0.02, 1 / 3) * height * width
            aspect = math.exp(random.uniform(*log_ratio))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if w < width and h < height:
                top, left = random.randint(0, height - h), random.randint(0, width - w)
                noise = torch.empty((frames, channels, h, w), dtype=video.dtype).normal_()
                video[:, :, top : top + h, left : left + w] = noise
                break
        return video


def finetune_transform(
    size: int,
    flip: bool,
    rand_augment: str,
    reprob: float,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    pixels: PixelOps = "reference",
) -> Transform:
    """Random-resized crop (``crop_scale``, 3/4-4/3), flip, RandAugment, normalise, erasing;
    ``pixels`` picks the reference's or torchvision's resizing, fill and erasing noise."""
    reference = pixels == "reference"
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if rand_augment:
        steps.append(VideoRandAugment(rand_augment, pixels))
    steps.append(
        v2.RandomResizedCrop(size, scale=crop_scale, ratio=(3 / 4, 4 / 3), antialias=not reference)
    )
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    erase: Callable[[torch.Tensor], torch.Tensor] | None = None
    if reprob > 0:
        # v2 draws one box and one noise patch for the whole (T, C, H, W) clip.
        erase = CubeErasing(reprob) if reference else v2.RandomErasing(p=reprob, value="random")

    def apply(frames: np.ndarray) -> torch.Tensor:
        video = _frames_to_tensor(frames)
        for step in steps:
            video = step(video)
        out = normalize(video)
        return erase(out.transpose(0, 1)).transpose(0, 1) if erase else out

    return apply


def _resize_short(video: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """Short side to ``size``, the long side to ``int(size * long / short)`` (floored, as the
    reference's ``get_resize_sizes`` and torchvision's ``Resize``)."""
    height, width = video.shape[-2:]
    new = [size * height // width, size] if width < height else [size, size * width // height]
    return F.resize(video, new, antialias=antialias)


def eval_views(
    frames: np.ndarray, size: int, num_crops: int, pixels: PixelOps = "reference"
) -> list[torch.Tensor]:
    """Short side to ``size``, then ``num_crops`` crops evenly along the long side.

    As the reference's test loader (``spatial_step = (long - size) / (num_crops - 1)``, crop
    ``k`` at ``int(k * spatial_step)``: the paper's left/centre/right or top/centre/bottom,
    along the height when it is not the shorter side); one crop is its validation
    ``CenterCrop`` at ``round((long - size) / 2)``. The resize is plain bilinear for
    ``pixels="reference"``, antialiased otherwise.
    """
    video = _resize_short(_frames_to_tensor(frames), size, antialias=pixels != "reference")
    height, width = video.shape[-2:]
    room = max(height, width) - size
    if num_crops == 1:
        starts = [round(room / 2)]
    else:
        step = room / (num_crops - 1)  # int(k * step) as the reference, not k * room / (n - 1)
        starts = [int(k * step) for k in range(num_crops)]
    views = []
    for start in starts:
        top, left = (start, 0) if height >= width else (0, start)
        views.append(normalize(video[..., top : top + size, left : left + size]))
    return views


def val_transform(size: int, pixels: PixelOps = "reference") -> Transform:
    """Validation during training: one centre crop after a short-side resize."""
    return lambda frames: eval_views(frames, size, 1, pixels)[0]


def build_mixup(
    mixup: float, cutmix: float, switch_prob: float, smoothing: float, num_classes: int
) -> Mixup | None:
    """timm's batch Mixup/CutMix with label smoothing, or None when both are off."""
    if mixup <= 0 and cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=mixup,
        cutmix_alpha=cutmix,
        switch_prob=switch_prob,
        label_smoothing=smoothing,
        num_classes=num_classes,
    )


def mix_batch(
    mixer: Mixup, video: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply Mixup/CutMix to ``(B, C, T, H, W)`` clips; returns clips and soft targets.

    timm mixes 4-D batches and cuts boxes on the last two dims; folding C and T into one axis
    puts the same box on every frame.
    """
    b, c, t, h, w = video.shape
    flat = video.reshape(b, c * t, h, w)
    flat, soft = mixer(flat, target)
    return flat.reshape(b, c, t, h, w), soft
