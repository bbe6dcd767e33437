"""Gradient accumulation (``optim.update_freq``): the reference's batch on fewer processes.

VideoMAE V2 ``run_class_finetuning.py`` scales the lr by ``batch_size * update_freq *
num_tasks / 256`` and schedules it per optimiser step; MAE's ``engine_pretrain.py`` divides each
loss by ``accum_iter`` and steps on window boundaries. So batch 4 x update_freq 2 must train as
batch 8: the same lr, the same losses, the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from services.common.store import ClipStore
from services.trainer.data import Batch
from services.trainer.engine import classify_step_loss, train_one_epoch
from services.trainer.main import run
from services.trainer.parallelize import DistInfo
from services.trainer.recipes import TrainConfig, apply_overrides, get_recipe
from services.trainer.synthetic import write_moving_shapes
from services.trainer.training import build_schedule
from services.trainer.videomae import create_classifier

CPU = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_moving_shapes(tmp_path_factory.mktemp("shapes"), 2, 16, 32, seed=3)


def test_schedule_counts_accumulated_videos_and_optimiser_steps() -> None:
    # ViT-B pre-training at the reference's 2048 videos per step: 64 GPUs x 32, or 8 x 32 x 8.
    recipe = get_recipe("vit_b_pretrain_800e")
    wide = build_schedule(recipe, world=64, steps_per_epoch=10)
    narrow = build_schedule(
        apply_overrides(recipe, ["optim.update_freq=8"]), world=8, steps_per_epoch=10
    )
    assert narrow == wide and narrow.peak == pytest.approx(8e-3)
    with pytest.raises(ValueError, match=r"optim\.update_freq"):
        apply_overrides(recipe, ["optim.update_freq=0"])


def _step(batches: list[Batch], update_freq: int) -> tuple[list[dict], torch.nn.Module]:
    torch.manual_seed(0)
    model = create_classifier(
        "vit_small_patch16_224", 4, num_frames=4, img_size=16, patch_size=8,
        embed_dim=32, depth=2, num_heads=2,
    )  # fmt: skip
    # SGD: its update is linear in the gradient, so float rounding stays at rounding level
    # (Adam's normalisation turns the rounding of near-zero gradients into full steps).
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    seen: list[dict] = []
    train_one_epoch(
        model, batches, optimizer, scaler, lambda s: 1e-2, classify_step_loss(None, 0.0),
        step=0, info=CPU, amp_dtype=None, clip_grad=1.0,
        after_step=lambda s, m, b: seen.append({**m, "step": s, "batches": b}) or True,
        on_rejections=lambda r: None, update_freq=update_freq,
    )  # fmt: skip
    return seen, model


def test_accumulated_step_equals_the_larger_batch() -> None:
    clips = torch.randn(16, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(16) % 4

    def batches(size: int) -> list[Batch]:
        return [
            Batch((clips[i : i + size], labels[i : i + size], None, torch.arange(size)), [])
            for i in range(0, 16, size)
        ]

    large, large_model = _step(batches(8), 1)
    small, small_model = _step(batches(4), 2)
    assert [m["step"] for m in small] == [1, 2] and [m["batches"] for m in small] == [2, 2]
    for a, b in zip(large, small, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    for (name, a), (_, b) in zip(
        large_model.named_parameters(), small_model.named_parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def _config(shapes: dict[str, Path], output: Path, recipe: str, *extra: str) -> TrainConfig:
    return apply_overrides(
        get_recipe(recipe),
        [
            f"data.train={json.dumps(str(shapes['train']))}",
            f"runtime.output={json.dumps(str(output))}",
            f"checkpoint.run={output.name}",
            "runtime.progress=false",
            "runtime.log_interval=1",
            "checkpoint.interval_steps=100",
            "optim.epochs=2",
            *extra,
        ],
    )


def _logged(output: Path) -> dict[int, dict]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return {row["step"]: row for row in map(json.loads, lines) if "loss" in row}


def test_update_freq_trains_as_the_larger_batch(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    # 8 videos: one step per epoch either way; fine-tuning's loss is a mean over the batch.
    large = run(
        "finetune",
        _config(shapes, tmp_path / "large", "tiny_finetune", "data.batch_size=8"),
        local_store,
    )
    accumulated = ("data.batch_size=4", "optim.update_freq=2")
    small = run(
        "finetune", _config(shapes, tmp_path / "small", "tiny_finetune", *accumulated), local_store
    )
    assert large.steps == small.steps == 2
    expected, got = _logged(tmp_path / "large"), _logged(tmp_path / "small")
    for step in (1, 2):
        assert got[step]["lr"] == pytest.approx(expected[step]["lr"])
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-5)


def test_resume_mid_epoch_with_update_freq(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    # Batch 2 x update_freq 2 over 8 videos: 2 steps per epoch; stopped after step 3 (the first
    # step of epoch 2, 2 loader batches into it) and resumed, it continues as if never stopped.
    args = ("data.batch_size=2", "optim.update_freq=2")
    full = run("pretrain", _config(shapes, tmp_path / "full", "tiny_pretrain", *args), local_store)
    assert full.steps == 4
    cut = tmp_path / "cut"
    stopped = run(
        "pretrain",
        _config(shapes, cut, "tiny_pretrain", *args, "runtime.max_steps=3"),
        local_store,
    )
    assert stopped.steps == 3
    state = torch.load(
        local_store.download(local_store.key_from_uri(stopped.checkpoint), tmp_path / "c.pth"),
        weights_only=True,
    )
    assert state["data"] == {"epoch": 1, "batches": 2}
    assert run("pretrain", _config(shapes, cut, "tiny_pretrain", *args), local_store).steps == 4
    expected, got = _logged(tmp_path / "full"), _logged(cut)
    assert sorted(got) == [1, 2, 3, 4]
    for step in range(1, 5):
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-5, abs=1e-7)
