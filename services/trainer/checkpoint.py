"""Checkpoints in the clip store: atomic, the latest k kept, everything needed to resume.

A checkpoint holds the reference keys ``model``, ``optimizer``, ``epoch``, ``scaler`` and
``args`` (here the resolved config as a plain dict, never a pickled Namespace), plus ``step``,
``scheduler`` (the schedule's position), ``data`` (epoch and batches done in it) and ``rng``
(torch, CUDA, numpy and random states of every rank). Files go to
``checkpoints/{run}/checkpoint-{step:08d}.pth``; ``checkpoints/{run}/latest.json`` names the
newest and is written after it, so a kill mid-save leaves the previous pointer valid (and the
store never shows a half-written object anyway).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.common.records import ObjectRef
from services.common.scratch import scratch_dir
from services.common.store import ClipStore

__all__ = ["CheckpointManager", "capture_rng", "restore_rng"]

_logger = logging.getLogger(__name__)


def capture_rng() -> dict[str, Any]:
    """This process's random states (torch CPU and CUDA, numpy, random).

    Only tensors, ints and tuples, so checkpoints load with ``weights_only=True``.
    """
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


class CheckpointManager:
    """Save every ``interval`` steps, keep the latest ``keep_latest_k``, load the latest."""

    def __init__(self, store: ClipStore, run: str, interval: int, keep_latest_k: int) -> None:
        if keep_latest_k < 1:
            raise ValueError(f"checkpoint.keep_latest_k must be >= 1, got {keep_latest_k}")
        self.store = store
        self.run = run
        self.interval = interval
        self.keep_latest_k = keep_latest_k
        self.pointer = store.checkpoint_key(run, "latest.json")

    def due(self, step: int) -> bool:
        return self.interval > 0 and step % self.interval == 0

    def save(self, step: int, state: dict[str, Any]) -> ObjectRef:
        """Write ``state`` as the checkpoint of ``step`` and move the pointer to it."""
        key = self.store.checkpoint_key(self.run, f"checkpoint-{step:08d}.pth")
        with scratch_dir("ckpt") as folder:
            path = Path(folder) / "checkpoint.pth"
            torch.save(state, path)
            ref = self.store.put_file(key, path)
        kept = [k for k in self._history() if k != key][-(self.keep_latest_k - 1) :]
        if self.keep_latest_k == 1:
            kept = []
        history = [*kept, key]
        self.store.put_json(
            self.pointer, {"step": step, "key": key, "sha256": ref.sha256, "history": history}
        )
        for old in set(self._listed()) - set(history):
            self.store.delete(old)
        _logger.info("checkpoint step %d -> %s", step, ref.uri)
        return ref

    def _history(self) -> list[str]:
        return (
            self.store.get_json(self.pointer)["history"] if self.store.exists(self.pointer) else []
        )

    def _listed(self) -> list[str]:
        prefix = self.store.checkpoint_key(self.run, "checkpoint-")
        return [k for k in self.store.list(prefix.rsplit("/", 1)[0] + "/") if k.startswith(prefix)]

    def latest(self) -> ObjectRef | None:
        if not self.store.exists(self.pointer):
            return None
        pointer = self.store.get_json(self.pointer)
        found = self.store.stat(pointer["key"])
        if found is None:
            return None
        return ObjectRef(key=found.key, uri=found.uri, sha256=pointer["sha256"], size=found.size)

    def load(self, ref: ObjectRef | None = None) -> dict[str, Any] | None:
        """The latest checkpoint's state (or ``ref``'s), verified; None when there is none."""
        ref = ref or self.latest()
        if ref is None:
            return None
        with self.store.open_local(ref) as path:
            return torch.load(path, map_location="cpu", weights_only=True)
