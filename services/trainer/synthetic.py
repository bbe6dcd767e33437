"""Procedurally generated action clips whose class needs temporal order: moving squares.

A square starts at a random place and moves left, right, up or down. Every single frame is
compatible with every class, and so is the unordered set of frames (the start is random), so a
model has to read the frames in order to tell the classes apart: a small, fast stand-in for an
action benchmark that a tiny VideoMAE learns in CPU minutes. ``make demo`` and the trainer tests
use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.common.video import write_frames

__all__ = ["CLASSES", "write_moving_shapes"]

CLASSES = ("left", "right", "up", "down")
_STEPS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def _clip(rng: np.random.Generator, direction: str, num_frames: int, size: int) -> np.ndarray:
    side = max(4, size // 5)
    speed = rng.uniform(0.6, 1.0) * (size - side) / max(1, num_frames - 1)
    dy, dx = _STEPS[direction]
    travel = speed * (num_frames - 1)
    # Start where the whole path stays inside the frame.
    lo_y, hi_y = (travel, size - side) if dy < 0 else (0, size - side - travel * dy)
    lo_x, hi_x = (travel, size - side) if dx < 0 else (0, size - side - travel * dx)
    y0, x0 = rng.uniform(lo_y, max(lo_y, hi_y)), rng.uniform(lo_x, max(lo_x, hi_x))
    background = rng.integers(0, 60, size=3)
    colour = rng.integers(150, 256, size=3)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    frames[:] = background
    for t in range(num_frames):
        y, x = round(y0 + dy * speed * t), round(x0 + dx * speed * t)
        frames[t, y : y + side, x : x + side] = colour
    return frames


def write_moving_shapes(
    folder: Path, per_class: int, num_frames: int, size: int, seed: int
) -> dict[str, Path]:
    """Write a moving-squares dataset as real mp4 files plus VideoMAE list files.

    Args:
        folder: output folder (created); videos go under ``folder/videos``.
        per_class: training clips per class; validation and test get ``max(1, per_class // 2)``
            each.
        num_frames: frames per clip.
        size: frame height and width (even).
        seed: seeds everything, so a dataset is reproducible.

    Returns:
        ``{"train", "val", "test"}`` list files (``path label`` per line), ``"classes"`` (a
        ``classInd.txt``: ``index name`` per line, 0-based like the labels) and ``"videos"``.
    """
    folder = Path(folder)
    videos = folder / "videos"
    rng = np.random.default_rng(seed)
    held_out = max(1, per_class // 2)
    outputs: dict[str, Path] = {"videos": videos}
    for split, count in (("train", per_class), ("val", held_out), ("test", held_out)):
        lines = []
        for label, direction in enumerate(CLASSES):
            for index in range(count):
                path = videos / f"{split}_{direction}_{index:04d}.mp4"
                write_frames(path, _clip(rng, direction, num_frames, size), fps=25.0)
                lines.append(f"{path} {label}")
        outputs[split] = folder / f"{split}.csv"
        outputs[split].write_text("".join(f"{line}\n" for line in lines))
    outputs["classes"] = folder / "classInd.txt"
    outputs["classes"].write_text("".join(f"{i} {name}\n" for i, name in enumerate(CLASSES)))
    return outputs
