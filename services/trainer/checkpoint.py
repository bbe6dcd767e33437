"""Checkpoints in the clip store: atomic, the latest k kept, everything needed to resume.

``CheckpointManager`` owns a run's resumable state as Stateful pieces (anything with
``state_dict()`` and ``load_state_dict()``), as torchtitan's does: ``save(step)`` writes them
all, ``restore()`` loads them all back. Each piece is saved under its name; the progress piece's
state is the file's own top-level keys; metadata is written in every file and never restored.
The trainer's files (``services.trainer.training`` registers the pieces) hold:

- the reference keys ``model``, ``optimizer``, ``epoch``, ``scaler`` and ``args`` (here the
  resolved config as a plain dict, never a pickled Namespace), so reference code reads them;
- ``step``, ``scheduler`` (the schedule's position) and ``data`` (epoch and batches done in
  it): the progress;
- ``rng``: torch, CUDA, numpy and random states of every rank;
- ``mode`` and ``classes``.

Files go to ``checkpoints/{run}/checkpoint-{step:08d}.pth``; ``checkpoints/{run}/latest.json``
names the newest and is written after it, so a kill mid-save leaves the previous pointer valid
(and the store never shows a half-written object anyway).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import torch

from services.common.records import ObjectRef
from services.common.scratch import scratch_dir
from services.common.store import ClipStore
from services.trainer.parallelize import DistInfo, all_gather_objects

__all__ = [
    "CheckpointManager",
    "IncompleteCheckpoint",
    "RankRandomStates",
    "Stateful",
    "capture_rng",
    "restore_rng",
]

_logger = logging.getLogger(__name__)

_NOTHING: Mapping[str, Any] = MappingProxyType({})


class Stateful(Protocol):
    """What a checkpoint piece offers: modules, optimisers and grad scalers already do."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, /) -> object: ...


class IncompleteCheckpoint(ValueError):
    """A checkpoint that lacks a piece of the state to restore (a run of another kind wrote it)."""


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


class RankRandomStates:
    """Every rank's random states as one piece: gathered at save, each rank's own at restore.

    Its ``state_dict`` is a collective: every rank calls it at the same steps.
    """

    def __init__(self, info: DistInfo) -> None:
        self.info = info

    def state_dict(self) -> list[object]:
        return all_gather_objects(capture_rng(), self.info)

    def load_state_dict(self, states: list[dict[str, Any]], /) -> None:
        restore_rng(states[self.info.rank])


class CheckpointManager:
    """Save every ``interval`` steps, keep the latest ``keep_latest_k``, restore the latest.

    Args:
        store: where the files go (``checkpoints/{run}/``).
        run: the run's name.
        interval: steps between the saves that ``due`` asks for; 0 for none.
        keep_latest_k: how many checkpoints stay; older ones are deleted after each save.
        states: the pieces saved and restored, each under its name (``model``, ``optimizer``).
        progress: the piece whose state is the file's own top-level keys (``step``, ``epoch``).
        metadata: written in every checkpoint, never restored (``args``, ``mode``).
        writes: whether this process writes; the others take part in the pieces' gathers.
    """

    def __init__(
        self,
        store: ClipStore,
        run: str,
        interval: int,
        keep_latest_k: int,
        states: Mapping[str, Stateful] = _NOTHING,
        *,
        progress: Stateful | None = None,
        metadata: Mapping[str, Any] = _NOTHING,
        writes: bool = True,
    ) -> None:
        if keep_latest_k < 1:
            raise ValueError(f"checkpoint.keep_latest_k must be >= 1, got {keep_latest_k}")
        self.store = store
        self.run = run
        self.interval = interval
        self.keep_latest_k = keep_latest_k
        self.states = states
        self.progress = progress
        self.metadata = metadata
        self.writes = writes
        self.pointer = store.checkpoint_key(run, "latest.json")
        self.saved_step: int | None = None
        """The step this process saved last (on every rank, writing or not)."""
        self.saved: ObjectRef | None = None
        """The checkpoint this process wrote last."""

    def due(self, step: int) -> bool:
        return self.interval > 0 and step % self.interval == 0

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint as it is now: metadata, the progress's keys and every piece's state."""
        progress = self.progress.state_dict() if self.progress is not None else {}
        pieces = {name: piece.state_dict() for name, piece in self.states.items()}
        return {**self.metadata, **progress, **pieces}

    def save(self, step: int, state: Mapping[str, Any] | None = None) -> ObjectRef | None:
        """Write the checkpoint of ``step`` and move the pointer to it, once per step.

        Every rank calls it at the same steps (a piece may gather over ranks).

        Args:
            step: the step reached; it names the file.
            state: what to write, for a caller that assembles it; by default ``state_dict()``.

        Returns:
            The checkpoint of ``step``, or None on a process that does not write.
        """
        if step == self.saved_step:
            return self.saved
        state = self.state_dict() if state is None else state
        self.saved_step = step
        if not self.writes:
            return None
        key = self.store.checkpoint_key(self.run, f"checkpoint-{step:08d}.pth")
        with scratch_dir("ckpt") as folder:
            path = Path(folder) / "checkpoint.pth"
            torch.save(dict(state), path)
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
        self.saved = ref
        return ref

    def restore(self) -> bool:
        """Load the latest checkpoint into the progress and every piece.

        Returns:
            False when the run has no checkpoint yet (the pieces are left as they are).

        Raises:
            IncompleteCheckpoint: the checkpoint lacks a piece; nothing was loaded.
        """
        ref = self.latest()
        if ref is None:
            return False
        state = self.load(ref)
        missing = sorted(set(self.states) - set(state))
        if missing:
            raise IncompleteCheckpoint(f"{ref.uri} holds no {', '.join(missing)}")
        if self.progress is not None:
            try:
                self.progress.load_state_dict(state)
            except KeyError as error:
                raise IncompleteCheckpoint(f"{ref.uri} holds no {error}") from error
        for name, piece in self.states.items():
            piece.load_state_dict(state[name])
        _logger.info("restored %s", ref.uri)
        return True

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
