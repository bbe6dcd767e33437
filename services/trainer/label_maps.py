"""Class lists of the Kinetics benchmarks, and head label maps between label sets.

VideoMAE V2 fine-tunes its Kinetics-710 model on K400 (and K600, K700) without throwing the
710-class head away: it keeps, for each target class, the head row of the same class (the
reference's label map, ``misc/label_710to400.json``), so the short K710 -> K400 stage (3 epochs
at lr 1e-5) starts from a classifier that already works. ``head_label_map`` builds that map from
two class-name lists; ``videomae.load_checkpoint(..., head_rows=...)`` applies it.

What is derived from what:

- ``kinetics400_classes.txt``: torchvision's ``_KINETICS400_CATEGORIES``
  (``torchvision/models/_meta.py``), one name per line. It is alphabetical, which is the K400
  label order of the reference's lists and of ``data.read_kinetics_csv`` (labels sorted by
  name), so label ``i`` of a K400 list is line ``i``. Named ``kinetics400`` in ``data.labels``.
- ``kinetics710_classes.txt``: the reference's ``misc/label_map_k710.txt`` (OpenGVLab/VideoMAEv2
  at 29eab1e8a588d1b3ec0cdec7b03a86cca491b74b, MIT licence, in the file's header), the 710
  names in head order. Named ``kinetics710`` in ``data.labels`` and ``model.head_classes``.
- ``K710_SPELLINGS``: K710 spells 13 of K400's classes as K600/K700 renamed them ("balloon
  blowing" is "inflating balloons"); the pairs are torchvision's K400 names against the
  reference's ``misc/label_map_k400.txt``, which lists the K400 classes in label order under
  their K710 names. With them the map by name from the shipped lists is the reference's
  ``label_710to400.json``, all 400 rows. The reference's ``k710_identical_label_merge.json``
  pairs "hugging" and "opening bottle" with "hugging (not baby)" and "opening bottle (not
  wine)" instead, but its label map, which fine-tuning applies, keeps the rows named in
  ``label_map_k400.txt``: "hugging baby" and "opening wine bottle"; so does this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

__all__ = ["CLASS_LISTS", "K710_SPELLINGS", "head_label_map", "read_names"]


def read_names(path: Path) -> list[str]:
    """Class names, one per line (blank lines skipped)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def _packaged(name: str) -> tuple[str, ...]:
    """A shipped list; its ``#`` lines (provenance, licence) are no names."""
    text = resources.files(__package__).joinpath(name).read_text()
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


CLASS_LISTS: dict[str, tuple[str, ...]] = {
    "kinetics400": _packaged("kinetics400_classes.txt"),
    "kinetics710": _packaged("kinetics710_classes.txt"),
}
"""Shipped class lists by the name ``data.labels`` or ``model.head_classes`` may give instead
of a file."""

K710_SPELLINGS: dict[str, str] = {
    "balloon blowing": "inflating balloons",
    "changing wheel": "changing wheel (not on bike)",
    "cooking sausages": "cooking sausages (not on barbeque)",
    "drinking": "sipping cup",
    "dying hair": "dyeing hair",
    "garbage collecting": "person collecting garbage",
    "hugging": "hugging baby",
    "making bed": "making the bed",
    "opening bottle": "opening wine bottle",
    "picking fruit": "picking apples",
    "skiing (not slalom or crosscountry)": "skiing mono",
    "sniffing": "smelling feet",
    "tying tie": "tying necktie",
}
"""K400 class (torchvision's name) -> the name of its row in the reference's K710 head."""


def _normalised(name: str) -> str:
    """Lists spell a class with spaces or underscores and in any case: "air_drumming"."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip().lower()


def head_label_map(source: Sequence[str], target: Sequence[str]) -> list[int]:
    """For each target class, the row of the source head that holds the same class.

    A target class the source does not name is looked up under its K710 spelling
    (``K710_SPELLINGS``), so torchvision's K400 names find their rows of a K710 head.

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
    spellings = {_normalised(k): _normalised(v) for k, v in K710_SPELLINGS.items()}
    found: list[int] = []
    missing: list[str] = []
    for name in target:
        key = _normalised(name)
        row = rows.get(key, rows.get(spellings.get(key, key)))
        if row is None:
            missing.append(name)
        else:
            found.append(row)
    if missing:
        raise ValueError(
            f"the checkpoint's head holds no row for {len(missing)} of this run's classes "
            f"(first: {missing[:5]}); model.remap_head needs every class in both lists"
        )
    return found
