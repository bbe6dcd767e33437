"""Model EMA as the reference's ``--model_ema``: ``ema = decay * ema + (1 - decay) * weights``
after every optimiser step (timm's ModelEma), saved as the checkpoint's ``model_ema``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from timm.utils import ModelEmaV2

from services.common.store import ClipStore
from services.trainer.checkpoint import CheckpointManager
from services.trainer.data import Batch
from services.trainer.engine import classify_step_loss
from services.trainer.main import resolve_config, run
from services.trainer.optim import build_optimizer
from services.trainer.parallelize import DistInfo
from services.trainer.synthetic import write_moving_shapes
from services.trainer.training import CosineSchedule, MetricsLog, RejectionLog, TrainProgress, train
from services.trainer.videomae import create_classifier

CPU = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


class _Loader(list):
    batch_size = 4


class _Sampler:
    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The batches are a fixed list: nothing to shuffle."""


def test_average_follows_each_optimiser_step(local_store: ClipStore, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_classifier(
        "vit_small_patch16_224", 4, num_frames=4, img_size=16, patch_size=8,
        embed_dim=32, depth=1, num_heads=2,
    )  # fmt: skip
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ModelEmaV2(model, decay=0.5)
    batch = Batch((torch.randn(4, 3, 4, 16, 16), torch.arange(4), None, torch.arange(4)), [])
    optimizer = build_optimizer(model, 1e-2, 0.05, (0.9, 0.999))
    progress = TrainProgress(CosineSchedule(total=1, warmup=0, peak=1e-2, warmup_lr=0, min_lr=0))
    metrics = MetricsLog(tmp_path, enabled=False)
    train(
        model, _Loader([batch]), _Sampler(), optimizer, torch.amp.GradScaler("cpu", enabled=False),
        classify_step_loss(None, 0.0), progress, CheckpointManager(local_store, "ema", 0, 1),
        epochs=1, info=CPU, amp_dtype=None, clip_grad=0.0, metrics=metrics,
        rejections=RejectionLog(tmp_path / "r.jsonl", False), log_interval=1, ema=ema,
    )  # fmt: skip
    assert progress.step == 1
    for name, value in model.state_dict().items():
        expected = 0.5 * initial[name].float() + 0.5 * value.float()
        assert torch.allclose(ema.module.state_dict()[name].float(), expected, atol=1e-6), name
    assert not torch.equal(model.head.weight, initial["head.weight"])


def test_checkpoint_holds_model_ema(local_store: ClipStore, tmp_path: Path) -> None:
    shapes = write_moving_shapes(tmp_path / "shapes", 1, 16, 32, seed=8)
    config = resolve_config(
        "finetune", "tiny_finetune", manifest=str(shapes["train"]), output=str(tmp_path / "ft"),
        overrides=("optim.epochs=1", "runtime.progress=false", "data.batch_size=4",
                   "model.ema=true", f"data.labels={json.dumps(str(shapes['classes']))}"),
        store=local_store,
    )  # fmt: skip
    result = run("finetune", config, local_store)
    state = torch.load(
        local_store.download(local_store.key_from_uri(result.checkpoint), tmp_path / "c.pth"),
        weights_only=True,
    )
    assert state["model_ema"].keys() == state["model"].keys()
    # decay 0.9999 after one step: the average is still (almost) the initial weights.
    assert not torch.equal(state["model_ema"]["head.weight"], state["model"]["head.weight"])
    with pytest.raises(ValueError, match=r"model\.ema_decay"):
        resolve_config("finetune", "tiny_finetune", overrides=("model.ema_decay=2",))
