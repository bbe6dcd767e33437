"""Class lists of the Kinetics benchmarks, and head label maps between label sets.

VideoMAE V2 fine-tunes its Kinetics-710 model on K400 (and K600, K700) without throwing the
710-class head away: it keeps, for each target class, the head row of the same class (the
reference's label map), so the short K710 -> K400 stage (3 epochs at lr 1e-5) starts from a
classifier that already works. ``head_label_map`` builds that map from two class-name lists;
``videomae.load_checkpoint(..., head_rows=...)`` applies it.

What is derived from what:

- ``kinetics400_classes.txt``: torchvision's ``_KINETICS400_CATEGORIES``
  (``torchvision/models/_meta.py``), one name per line. It is alphabetical, which is the K400
  label order of the reference's lists and of ``data.read_kinetics_csv`` (labels sorted by
  name), so label ``i`` of a K400 list is line ``i``. Named ``kinetics400`` in ``data.labels``.
- Kinetics-710's classes are the union K400 ∪ K600 ∪ K700 in the reference's order. The K600
  and K700 lists do not install offline, so no K710 list ships here. The names of a K710 head's
  rows come from the checkpoint (the trainer saves its ``classes``) or, for an official file,
  from ``model.head_classes`` (the reference's 710 names in head order, one per line). Every
  K400 class is in K710 by construction, so the K710 -> K400 map is found by name either way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

__all__ = ["CLASS_LISTS", "head_label_map", "read_names"]


def read_names(path: Path) -> list[str]:
    """Class names, one per line (blank lines skipped)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def _packaged(name: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath(name).read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


CLASS_LISTS: dict[str, tuple[str, ...]] = {"kinetics400": _packaged("kinetics400_classes.txt")}
"""Shipped class lists by the name ``data.labels`` may give instead of a file."""


def _normalised(name: str) -> str:
    """Lists spell a class with spaces or underscores and in any case: "air_drumming"."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip().lower()


def head_label_map(source: Sequence[str], target: Sequence[str]) -> list[int]:
    """For each target class, the row of the source head that holds the same class.

    Args:
        source: the class of each row of the checkpoint's head (K710's 710 names).
        target: this run's classes, by label (K400's 400 names).

    Returns:
        ``rows`` with ``new_head.weight = old_head.weight[rows]`` (and the bias alike).

    Raises:
        ValueError: a target class the source head does not hold, or a source list that
            names a class twice.
    """
    rows: dict[str, int] = {}
    for row, name in enumerate(source):
        if rows.setdefault(_normalised(name), row) != row:
            raise ValueError(f"model.head_classes names {name!r} twice")
    missing = [name for name in target if _normalised(name) not in rows]
    if missing:
        raise ValueError(
            f"the checkpoint's head holds no row for {len(missing)} of this run's classes "
            f"(first: {missing[:5]}); model.remap_head needs every class in both lists"
        )
    return [rows[_normalised(name)] for name in target]
