"""Head label maps: a K710 model's head onto K400 by class name, as the reference's label map
(VideoMAE V2 fine-tunes its K710 model on K400 for 3 epochs at lr 1e-5 keeping the head rows of
the K400 classes), checked against the reference's own map and lists: OpenGVLab/VideoMAEv2 at
29eab1e8a588d1b3ec0cdec7b03a86cca491b74b, ``misc/label_710to400.json`` (applied by
``run_class_finetuning.py:563-577``), ``misc/label_map_k710.txt``, ``misc/label_map_k400.txt``."""

from __future__ import annotations

import csv
import fnmatch
import json
import tomllib
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
import torch
from torchvision.models._meta import _KINETICS400_CATEGORIES

from services.common.store import ClipStore
from services.trainer.label_maps import CLASS_LISTS, K710_SPELLINGS, head_label_map
from services.trainer.main import _Job, resolve_config, run
from services.trainer.parallelize import DistInfo
from services.trainer.recipes import get_recipe
from services.trainer.synthetic import CLASSES, write_moving_shapes
from services.trainer.videomae import create_classifier, load_checkpoint

K400 = CLASS_LISTS["kinetics400"]
K710 = CLASS_LISTS["kinetics710"]

# misc/label_710to400.json: for K400 label i, the row of the K710 head that the reference keeps.
LABEL_710TO400 = [
    341, 158, 189, 16, 398, 302, 202, 318, 80, 323, 249, 315, 18, 88, 365, 52, 257, 103, 113, 162,
    75, 338, 388, 352, 308, 125, 159, 82, 10, 44, 92, 396, 185, 258, 383, 178, 71, 260, 15, 335,
    192, 326, 58, 133, 172, 120, 334, 280, 306, 101, 337, 173, 203, 356, 4, 209, 332, 7, 65, 115,
    95, 81, 232, 344, 303, 201, 342, 351, 165, 397, 252, 368, 285, 244, 363, 355, 79, 268, 110,
    343, 72, 219, 321, 208, 345, 340, 84, 61, 206, 188, 62, 55, 29, 237, 2, 286, 245, 90, 8, 372,
    325, 380, 226, 274, 346, 354, 97, 28, 246, 194, 212, 26, 281, 147, 215, 264, 30, 14, 301, 275,
    66, 265, 224, 104, 121, 357, 117, 54, 107, 279, 109, 122, 289, 78, 59, 241, 179, 291, 349, 142,
    152, 220, 311, 386, 145, 239, 392, 99, 266, 100, 176, 314, 167, 64, 160, 216, 49, 207, 222,
    184, 171, 22, 234, 148, 339, 218, 294, 324, 233, 262, 9, 377, 41, 390, 53, 150, 361, 73, 247,
    96, 60, 364, 298, 70, 395, 143, 236, 336, 196, 385, 33, 144, 1, 307, 393, 256, 263, 375, 235,
    273, 243, 106, 366, 271, 186, 287, 51, 299, 175, 276, 369, 57, 11, 373, 35, 163, 297, 195, 399,
    290, 382, 319, 134, 40, 310, 223, 151, 270, 3, 387, 137, 31, 309, 217, 17, 374, 190, 277, 327,
    135, 394, 50, 284, 177, 67, 379, 141, 353, 108, 37, 136, 197, 272, 21, 312, 213, 164, 182, 250,
    91, 89, 253, 199, 333, 248, 63, 119, 0, 130, 102, 32, 227, 362, 296, 23, 47, 156, 180, 183,
    313, 5, 350, 389, 328, 112, 93, 378, 359, 83, 282, 174, 371, 48, 360, 24, 376, 68, 42, 221,
    140, 181, 118, 116, 381, 94, 77, 27, 45, 87, 230, 292, 76, 39, 169, 131, 19, 126, 367, 105,
    114, 193, 210, 305, 149, 98, 259, 200, 12, 320, 254, 146, 278, 242, 261, 36, 293, 251, 214, 25,
    304, 204, 157, 255, 111, 229, 283, 128, 161, 170, 86, 74, 138, 6, 198, 384, 187, 155, 348, 154,
    166, 124, 205, 132, 13, 34, 225, 43, 347, 228, 358, 38, 127, 231, 316, 269, 288, 139, 168, 46,
    238, 317, 69, 211, 123, 391, 330, 295, 322, 329, 129, 240, 153, 267, 85, 300, 20, 191, 56, 370,
    331
]  # fmt: skip

REPO = Path(__file__).resolve().parents[3]


def test_shipped_k400_list_is_torchvisions_in_label_order() -> None:
    assert tuple(_KINETICS400_CATEGORIES) == K400
    # Label order of the K400 lists: sorted names, "abseiling" 0 ... "zumba" 399.
    assert len(K400) == len(set(K400)) == 400 and list(K400) == sorted(K400)
    assert (K400[0], K400[1], K400[399]) == ("abseiling", "air drumming", "zumba")


def test_shipped_k710_list_is_the_references_head_order() -> None:
    assert len(K710) == len(set(K710)) == 710
    # misc/label_map_k710.txt: first, 223rd and last lines; the header comments are no names.
    assert (K710[0], K710[222], K710[709]) == ("riding a bike", "hugging baby", "bull fighting")
    assert not any(name.startswith("#") for name in K710)
    header = resources.files("services.trainer").joinpath("kinetics710_classes.txt").read_text()
    assert "OpenGVLab/VideoMAEv2" in header and "29eab1e8a588d1b3ec0cdec7b03a86cca491b74b" in header
    assert "MIT License" in header


def test_shipped_lists_are_package_data() -> None:
    # pyproject's package-data globs ship both lists in the wheel beside label_maps.py.
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = globs["package-data"]["*"]
    for name in ("kinetics400_classes.txt", "kinetics710_classes.txt"):
        assert any(fnmatch.fnmatch(name, pattern) for pattern in shipped)
        assert resources.files("services.trainer").joinpath(name).is_file()


def test_k710_to_k400_map_is_the_references() -> None:
    # All 400 rows: torchvision's K400 names found among the K710 names, 13 of them under their
    # K710 spelling, give exactly the reference's label_710to400.json.
    assert head_label_map(K710, K400) == LABEL_710TO400
    rows = dict(zip(K400, LABEL_710TO400, strict=True))
    assert K710[rows["abseiling"]] == "abseiling" and K710[rows["zumba"]] == "zumba"
    assert K710[rows["balloon blowing"]] == "inflating balloons"
    assert K710[rows["hugging"]] == "hugging baby", "the map's row, not the merge file's"
    assert {K710[rows[k400]] for k400 in K710_SPELLINGS} == set(K710_SPELLINGS.values())
    # Without the spellings, those 13 classes have no row of that name.
    assert not set(K710_SPELLINGS) & set(K710)


def test_an_official_k710_file_is_remapped_with_the_shipped_list(
    local_store: ClipStore, tmp_path: Path
) -> None:
    # An official file carries no class names: the recipe's model.head_classes=kinetics710.
    def tiny(classes: int) -> torch.nn.Module:
        return create_classifier(
            "vit_small_patch16_224", classes, num_frames=4, img_size=16, patch_size=8,
            embed_dim=32, depth=1, num_heads=2,
        )  # fmt: skip

    official = tiny(710)
    torch.save({"module": official.state_dict()}, tmp_path / "k710.pth")
    recipe = get_recipe("vit_g_k710_to_k400_finetune")
    assert recipe.model.head_classes == "kinetics710"
    config = replace(
        recipe, model=replace(recipe.model, init_checkpoint=str(tmp_path / "k710.pth"))
    )
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    target = tiny(400)
    _Job("finetune", config, local_store, info, tmp_path / "job")._initialise(target, list(K400))
    assert torch.equal(target.head.weight, official.head.weight[LABEL_710TO400])
    assert torch.equal(target.head.bias, official.head.bias[LABEL_710TO400])


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
    # The K710 stage names its labels in the reference's order, so its checkpoint does too.
    assert get_recipe("vit_g_k710_finetune").data.labels == "kinetics710"


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
