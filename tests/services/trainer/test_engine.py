"""Optimiser groups, lr schedule, frame-consistent augmentation, the step, checkpoint keeping."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from services.common.store import ClipStore
from services.trainer.checkpoint import CheckpointManager, capture_rng, restore_rng
from services.trainer.data import Batch
from services.trainer.engine import NonFiniteLoss, classify_step_loss, train_one_epoch
from services.trainer.optim import build_optimizer, cosine_lr, effective_lr
from services.trainer.parallelize import DistInfo, parallelize
from services.trainer.recipes import RECIPES, apply_overrides, get_recipe
from services.trainer.transforms import (
    MultiScaleCrop,
    build_mixup,
    eval_views,
    finetune_transform,
    mix_batch,
)
from services.trainer.videomae import create_classifier

CPU = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


def _tiny_classifier(num_classes: int = 4) -> torch.nn.Module:
    return create_classifier(
        "vit_small_patch16_224", num_classes, num_frames=4, img_size=16, patch_size=8,
        embed_dim=32, depth=3, num_heads=2,
    )  # fmt: skip


def test_param_groups_no_decay_on_1d_and_layer_decay() -> None:
    model = _tiny_classifier()
    optimizer = build_optimizer(model, 1e-3, 0.05, (0.9, 0.999), layer_decay=0.5)
    by_param = {
        id(p): (g["weight_decay"], g["lr_scale"])
        for g in optimizer.param_groups
        for p in g["params"]
    }
    named = dict(model.named_parameters())
    assert by_param[id(named["blocks.0.attn.q_bias"])][0] == 0.0
    assert by_param[id(named["blocks.0.norm1.weight"])][0] == 0.0
    assert by_param[id(named["head.bias"])][0] == 0.0
    assert by_param[id(named["blocks.0.attn.qkv.weight"])][0] == 0.05
    # depth 3: patch_embed id 0 -> 0.5^4, block i -> 0.5^(3 - i), head id 4 -> 1.
    assert by_param[id(named["patch_embed.proj.weight"])][1] == 0.5**4
    assert by_param[id(named["blocks.2.mlp.fc1.weight"])][1] == 0.5
    assert by_param[id(named["head.weight"])][1] == 1.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)


def test_cosine_schedule_and_batch_scaling() -> None:
    assert effective_lr(1e-3, 1024) == pytest.approx(4e-3)
    lrs = [cosine_lr(s, 100, 10, 1.0, 0.0, 0.1) for s in range(101)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_augmentations_are_the_same_on_every_frame() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    still = np.repeat(frame[None], 6, axis=0)  # a video whose frames are all equal
    # Erasing off: the reference draws its noise per frame (test_reference_pixels.py).
    for pixels in ("reference", "torchvision"):
        transform = finetune_transform(32, True, "rand-m9-n4-mstd0.5-inc1", 0.0, pixels=pixels)
        for seed in range(5):
            torch.manual_seed(seed)
            out = transform(still)  # C, T, H, W
            assert out.shape == (3, 6, 32, 32)
            assert torch.allclose(out, out[:, :1].expand_as(out))
    shared = finetune_transform(32, True, "", reprob=1.0, pixels="torchvision")
    out = shared(still)
    assert torch.allclose(out, out[:, :1].expand_as(out)), "torchvision's noise is shared"
    crop = MultiScaleCrop(24)
    video = torch.from_numpy(still).permute(0, 3, 1, 2)
    out = crop(video)
    assert out.shape == (6, 3, 24, 24) and torch.equal(out, out[:1].expand_as(out))
    views = eval_views(still, 32, 3)
    assert len(views) == 3 and not torch.equal(views[0], views[2])  # left vs right crop


def test_mixup_cutmix_boxes_span_all_frames() -> None:
    mixer = build_mixup(0.0, 1.0, 0.5, 0.1, num_classes=4)
    clips = torch.stack([torch.full((3, 4, 16, 16), float(i)) for i in range(4)])
    mixed, soft = mix_batch(mixer, clips.clone(), torch.tensor([0, 1, 2, 3]))
    assert mixed.shape == clips.shape and soft.shape == (4, 4)
    assert torch.allclose(soft.sum(1), torch.ones(4))
    # One box per clip, identical in every frame.
    assert torch.equal(mixed, mixed[:, :, :1].expand_as(mixed))
    assert build_mixup(0.0, 0.0, 0.5, 0.1, 4) is None


def test_train_step_updates_and_stops_on_non_finite_loss() -> None:
    torch.manual_seed(0)
    model = _tiny_classifier()
    optimizer = build_optimizer(model, 1e-2, 0.05, (0.9, 0.999))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    clips, labels = torch.randn(4, 3, 4, 16, 16), torch.tensor([0, 1, 2, 3])
    batch = Batch((clips, labels, None, torch.arange(4)), [])
    seen: list[dict[str, float]] = []
    before = model.head.weight.detach().clone()
    step = train_one_epoch(
        model, [batch, batch, batch], optimizer, scaler, lambda s: 1e-2 * (s + 1),
        classify_step_loss(None, 0.0), step=0, info=CPU, amp_dtype=None, clip_grad=1.0,
        after_step=lambda s, m, b: seen.append(m) or s < 2, on_rejections=lambda r: None,
    )  # fmt: skip
    assert step == 2 and [m["lr"] for m in seen] == pytest.approx([1e-2, 2e-2])
    assert not torch.equal(before, model.head.weight)
    assert seen[1]["loss"] < seen[0]["loss"] and seen[0]["grad_norm"] > 0
    bad = Batch((torch.full_like(clips, float("nan")), labels, None, torch.arange(4)), [])
    with pytest.raises(NonFiniteLoss):
        train_one_epoch(
            model, [bad], optimizer, scaler, lambda s: 1e-2, classify_step_loss(None, 0.0),
            step=2, info=CPU, amp_dtype=None, clip_grad=0.0,
            after_step=lambda s, m, b: True, on_rejections=lambda r: None,
        )  # fmt: skip


def test_checkpoints_keep_latest_k_and_restore_rng(local_store: ClipStore) -> None:
    manager = CheckpointManager(local_store, "unit", interval=2, keep_latest_k=2)
    assert manager.load() is None and manager.due(4) and not manager.due(3)
    for step in (2, 4, 6):
        manager.save(step, {"model": {"w": torch.full((2,), float(step))}, "step": step})
    kept = sorted(local_store.list("checkpoints/unit/"))
    assert kept == [
        "checkpoints/unit/checkpoint-00000004.pth",
        "checkpoints/unit/checkpoint-00000006.pth",
        "checkpoints/unit/latest.json",
    ]
    assert manager.load()["step"] == 6
    state = capture_rng()
    expected = (torch.rand(3), np.random.rand(3))
    restore_rng(state)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(
        np.random.rand(3), expected[1]
    )


def test_recipes_resolve_and_overrides_are_checked() -> None:
    for name in RECIPES:
        config = get_recipe(name)
        assert config.optim.epochs >= 1 and config.checkpoint.run
    b = get_recipe("vit_b_pretrain_800e")
    assert (b.optim.betas, b.optim.weight_decay, b.data.num_sample) == ((0.9, 0.95), 0.05, 4)
    assert get_recipe("ssv2_finetune").data.tsn_segments
    changed = apply_overrides(b, ["optim.base_lr=5e-4", "model.extra.depth=3", "data.flip=true"])
    assert changed.optim.base_lr == 5e-4 and changed.model.extra == {"depth": 3}
    for bad in ("optim.nope=1", "optim.base_lr", "model.mask_ratio=1.5"):
        with pytest.raises(ValueError):
            apply_overrides(b, [bad])


def test_activation_checkpointing_keeps_gradients() -> None:
    torch.manual_seed(0)
    plain = _tiny_classifier()
    checkpointed = _tiny_classifier()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed = parallelize(checkpointed, CPU, activation_checkpointing=True, compile=False)
    assert checkpointed.grad_checkpointing
    clips = torch.randn(2, 3, 4, 16, 16)
    for model in (plain, checkpointed):
        model(clips).sum().backward()
    for (name, a), (_, b) in zip(
        plain.named_parameters(), checkpointed.named_parameters(), strict=True
    ):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
