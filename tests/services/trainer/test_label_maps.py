"""Head label maps: a K710 model's head onto K400 by class name, as the reference's label map
(VideoMAE V2 fine-tunes its K710 model on K400 for 3 epochs at lr 1e-5 keeping the head rows of
the K400 classes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torchvision.models._meta import _KINETICS400_CATEGORIES

from services.common.store import ClipStore
from services.trainer.label_maps import CLASS_LISTS, head_label_map
from services.trainer.main import resolve_config, run
from services.trainer.recipes import get_recipe
from services.trainer.synthetic import CLASSES, write_moving_shapes
from services.trainer.videomae import create_classifier, load_checkpoint

K400 = CLASS_LISTS["kinetics400"]


def test_shipped_k400_list_is_torchvisions_in_label_order() -> None:
    assert tuple(_KINETICS400_CATEGORIES) == K400
    # Label order of the K400 lists: sorted names, "abseiling" 0 ... "zumba" 399.
    assert len(K400) == len(set(K400)) == 400 and list(K400) == sorted(K400)
    assert (K400[0], K400[1], K400[399]) == ("abseiling", "air drumming", "zumba")


def test_k710_head_rows_of_known_k400_classes() -> None:
    # A 710-row head: K400's classes among others, in another order and spelling (as lists
    # write "air_drumming"), plus classes only K600/K700 have.
    extra = [f"k700 only {i}" for i in range(310)]
    source = extra[:100] + [name.replace(" ", "_") for name in reversed(K400)] + extra[100:]
    rows = head_label_map(source, K400)
    assert len(rows) == 400 and len(source) == 710
    for k400_label, name in ((0, "abseiling"), (1, "air drumming"), (399, "zumba")):
        assert source[rows[k400_label]].replace("_", " ") == name
    assert rows[0] == 100 + 399 and rows[399] == 100
    with pytest.raises(ValueError, match="no row for 1"):
        head_label_map(source[:-311], K400)  # "abseiling" missing
    with pytest.raises(ValueError, match="twice"):
        head_label_map(["yoga", "Yoga"], ["yoga"])


def test_load_checkpoint_keeps_the_mapped_rows() -> None:
    def tiny(classes: int) -> torch.nn.Module:
        return create_classifier(
            "vit_small_patch16_224", classes, num_frames=4, img_size=16, patch_size=8,
            embed_dim=32, depth=1, num_heads=2,
        )  # fmt: skip

    source, target = tiny(6), tiny(3)
    report = load_checkpoint(target, source.state_dict(), head_rows=[4, 0, 2])
    assert not report.missing_keys and not report.dropped
    assert torch.equal(target.head.weight, source.head.weight[[4, 0, 2]])
    assert torch.equal(target.head.bias, source.head.bias[[4, 0, 2]])


def test_k710_to_k400_recipe_remaps_onto_the_k400_names() -> None:
    config = get_recipe("vit_g_k710_to_k400_finetune")
    assert config.model.remap_head and config.data.labels == "kinetics400"
    assert (config.optim.epochs, config.optim.base_lr) == (3, 1e-5)


def _predictions(result: object) -> dict[str, str]:
    path = Path(result.evaluation["files"]["predictions.csv"]["path"])
    with path.open(newline="") as handle:
        return {row["video"]: row["predicted"] for row in csv.DictReader(handle)}


def test_a_remapped_head_predicts_the_same_classes(local_store: ClipStore, tmp_path: Path) -> None:
    # A classifier trained on (left, right, up, down), evaluated on the classes in another
    # order: the remapped head predicts the same class for every video.
    shapes = write_moving_shapes(tmp_path / "shapes", 2, 16, 32, seed=4)
    quick = ("optim.epochs=1", "runtime.progress=false", "data.batch_size=4")
    labels = f"data.labels={json.dumps(str(shapes['classes']))}"
    trained = run(
        "finetune",
        resolve_config("finetune", "tiny_finetune", manifest=str(shapes["train"]),
                       output=str(tmp_path / "ft"), overrides=(*quick, labels),
                       store=local_store),
        local_store,
    )  # fmt: skip
    reordered = ["down", "up", "left", "right"]
    (tmp_path / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(reordered)))
    test_list = tmp_path / "test.csv"
    test_list.write_text(
        "".join(
            f"{path} {reordered.index(CLASSES[int(label)])}\n"
            for path, label in (line.split() for line in shapes["test"].read_text().splitlines())
        )
    )

    def evaluate(name: str, *overrides: str) -> object:
        config = resolve_config(
            "evaluate", "tiny_finetune", output=str(tmp_path / name), store=local_store,
            overrides=(f"model.init_checkpoint={json.dumps(trained.checkpoint)}",
                       "runtime.progress=false", *overrides),
        )  # fmt: skip
        return run("evaluate", config, local_store)

    original = evaluate("original", f"data.test={json.dumps(str(shapes['test']))}", labels)
    remapped = evaluate(
        "remapped",
        f"data.test={json.dumps(str(test_list))}",
        f"data.labels={json.dumps(str(tmp_path / 'classInd.txt'))}",
        "model.remap_head=true",
    )
    assert _predictions(remapped) == _predictions(original)
    assert remapped.evaluation["top1"] == original.evaluation["top1"]
