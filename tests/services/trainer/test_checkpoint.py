"""The checkpoint manager saves and restores every piece of a run's state, in the file format."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from services.common.store import ClipStore
from services.trainer.checkpoint import CheckpointManager, IncompleteCheckpoint, RankRandomStates
from services.trainer.parallelize import DistInfo
from services.trainer.training import CosineSchedule, TrainProgress

CPU = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
SCHEDULE = CosineSchedule(total=40, warmup=4, peak=1e-3, warmup_lr=1e-6, min_lr=1e-5)


class _Run:
    """The pieces the trainer registers, over a small model, trained for ``steps`` steps."""

    def __init__(self, seed: int, steps: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**seed, growth_interval=1)
        self.progress = TrainProgress(SCHEDULE)
        for _ in range(steps):
            loss = self.model(torch.randn(2, 4)).square().mean()
            self.optimizer.zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.progress.step += 1
            self.progress.batches += 1

    def manager(self, store: ClipStore, **options: object) -> CheckpointManager:
        states = {
            "model": self.model,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "rng": RankRandomStates(CPU),
        }
        return CheckpointManager(store, "unit", 5, 2, states, progress=self.progress, **options)


def _draws() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(3), np.random.rand(3), random.random()


def _same_draws(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_restore_brings_back_every_piece(local_store: ClipStore, tmp_path: Path) -> None:
    trained = _Run(seed=0, steps=3)
    trained.progress.epoch = 1
    metadata = {"args": {"optim": {"epochs": 2}}, "mode": "finetune", "classes": ["a", "b"]}
    ref = trained.manager(local_store, metadata=metadata).save(3)
    after_save = _draws()

    fresh = _Run(seed=1)
    assert fresh.manager(local_store).restore()
    assert _same_draws(_draws(), after_save)  # torch, numpy and random continue from the save
    expected = trained.model.state_dict()
    assert all(torch.equal(value, expected[k]) for k, value in fresh.model.state_dict().items())
    saved_moments = trained.optimizer.state_dict()["state"]
    for index, moments in fresh.optimizer.state_dict()["state"].items():
        assert moments["step"] == 3
        assert torch.equal(moments["exp_avg"], saved_moments[index]["exp_avg"])
        assert torch.equal(moments["exp_avg_sq"], saved_moments[index]["exp_avg_sq"])
    assert fresh.scaler.get_scale() == trained.scaler.get_scale() == 8.0
    assert (fresh.progress.step, fresh.progress.epoch, fresh.progress.batches) == (3, 1, 3)

    # The file: the reference keys, the progress as top-level keys, the metadata.
    state = torch.load(local_store.download(ref.key, tmp_path / "c.pth"))
    assert {"model", "optimizer", "epoch", "scaler", "args"} <= set(state)
    assert (
        state["step"] == 3 and state["epoch"] == 1 and state["data"] == {"epoch": 1, "batches": 3}
    )
    assert state["scheduler"] == {"step": 3, "total": 40, "warmup": 4, "peak": 1e-3}
    assert state["args"] == metadata["args"] and state["classes"] == ["a", "b"]
    assert len(state["rng"]) == 1 and set(state["rng"][0]) == {"torch", "cuda", "numpy", "python"}


def test_random_states_restore_each_generator(local_store: ClipStore) -> None:
    run = _Run(seed=0)
    run.manager(local_store).save(1)
    expected = _draws()
    _draws()
    assert run.manager(local_store).restore()
    assert _same_draws(_draws(), expected)


def test_a_checkpoint_the_previous_trainer_wrote_resumes(local_store: ClipStore) -> None:
    # The layout main.py built by hand before the manager owned it.
    old = _Run(seed=0, steps=2)
    layout = {
        "model": old.model.state_dict(),
        "optimizer": old.optimizer.state_dict(),
        "epoch": 0,
        "scaler": old.scaler.state_dict(),
        "args": {},
        "step": 2,
        "scheduler": {"step": 2, "total": 40, "warmup": 4, "peak": 1e-3},
        "data": {"epoch": 0, "batches": 2},
        "rng": RankRandomStates(CPU).state_dict(),
        "mode": "pretrain",
        "classes": [],
    }
    CheckpointManager(local_store, "unit", 5, 2).save(2, layout)
    fresh = _Run(seed=1)
    assert fresh.manager(local_store).restore()
    assert fresh.progress.step == 2 and fresh.progress.batches == 2
    assert torch.equal(fresh.model[0].weight, old.model[0].weight)


def test_nothing_to_restore_leaves_the_pieces(local_store: ClipStore) -> None:
    run = _Run(seed=0)
    before = run.model[0].weight.clone()
    assert not run.manager(local_store).restore()
    assert torch.equal(run.model[0].weight, before) and run.progress.step == 0


def test_a_checkpoint_without_a_piece_is_refused_before_loading(local_store: ClipStore) -> None:
    writer = _Run(seed=0)
    CheckpointManager(local_store, "unit", 5, 2).save(4, {"model": writer.model.state_dict()})
    reader = _Run(seed=1)
    before = reader.model[0].weight.clone()
    with pytest.raises(IncompleteCheckpoint, match="optimizer, rng, scaler"):
        reader.manager(local_store).restore()
    assert torch.equal(reader.model[0].weight, before)
    # Restoring only the model from it works: evaluation of a run's own checkpoint.
    assert CheckpointManager(local_store, "unit", 5, 2, {"model": reader.model}).restore()
    assert torch.equal(reader.model[0].weight, writer.model[0].weight)


def test_each_step_is_saved_once_and_only_by_the_writer(local_store: ClipStore) -> None:
    run = _Run(seed=0)
    manager = run.manager(local_store)
    first = manager.save(5)
    run.model[0].weight.data.zero_()
    assert manager.save(5) == first == manager.saved and manager.saved_step == 5
    assert not torch.equal(manager.load()["model"]["0.weight"], run.model[0].weight)

    other = run.manager(local_store, writes=False)
    assert other.save(10) is None and other.saved_step == 10
    assert local_store.get_json("checkpoints/unit/latest.json")["step"] == 5
