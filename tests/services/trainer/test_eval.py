"""Multi-view evaluation outputs, view fusion, and weak-label checkpoints that fine-tune."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from services.common.store import ClipStore
from services.trainer.data import Batch
from services.trainer.engine import evaluate
from services.trainer.main import resolve_config, run
from services.trainer.parallelize import DistInfo
from services.trainer.synthetic import CLASSES, write_moving_shapes
from services.trainer.videomae import create_classifier, load_checkpoint


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_moving_shapes(tmp_path_factory.mktemp("shapes"), 2, 16, 32, seed=5)


_QUICK = ("optim.epochs=1", "runtime.progress=false", "data.batch_size=4")


def test_views_fused_by_mean_softmax() -> None:
    # The reference's score (OpenGVLab/VideoMAEv2 29eab1e, engine_for_finetuning.py:275-328,
    # merge(method="prob") after final_test): softmax of each view's logits, the mean over the
    # test_num_segment x test_num_crop views of a video, top-1 its argmax.
    torch.manual_seed(0)
    model = create_classifier(
        "vit_small_patch16_224", 5, num_frames=4, img_size=16, patch_size=8,
        embed_dim=32, depth=1, num_heads=2,
    )  # fmt: skip
    views = torch.randn(2, 6, 3, 4, 16, 16)  # 2 videos x (2 segments x 3 crops)
    batch = Batch((views, torch.tensor([1, 3]), torch.tensor([7, 9])), [])
    cpu = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    result = evaluate(model, [batch], cpu, None)
    with torch.no_grad():
        expected = model(views.flatten(0, 1)).softmax(-1).view(2, 6, 5).mean(1)
    assert torch.allclose(torch.from_numpy(result.probabilities), expected, atol=1e-6)
    assert result.indices.tolist() == [7, 9] and result.labels.tolist() == [1, 3]
    assert result.topk(5) == 1.0
    assert result.topk(1) == float(torch.mean((expected.argmax(1) == torch.tensor([1, 3])) * 1.0))


def test_evaluate_writes_reports_and_counts_bad_videos(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    folder = shapes["train"].parent
    trained = run(
        "finetune",
        resolve_config("finetune", "tiny_finetune", manifest=str(shapes["train"]),
                       output=str(tmp_path / "ft"), overrides=_QUICK, store=local_store),
        local_store,
    )  # fmt: skip
    assert trained.checkpoint.startswith("file://") and trained.evaluation == {}

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    test_list = tmp_path / "test.csv"
    test_list.write_text(shapes["test"].read_text() + f"{broken} 2\n")
    config = resolve_config(
        "evaluate", "tiny_finetune", output=str(tmp_path / "eval"), store=local_store,
        overrides=(f"data.test={json.dumps(str(test_list))}",
                   f"data.labels={json.dumps(str(folder / 'classInd.txt'))}",
                   f"model.init_checkpoint={json.dumps(trained.checkpoint)}",
                   "data.test_segments=2", "data.test_crops=3", "runtime.progress=false"),
    )  # fmt: skip
    result = run("evaluate", config, local_store)

    report = result.evaluation
    assert result.rejected == 1 and report["rejected_videos"] == [str(broken)]
    assert report["videos"] == 4 and report["top5"] == 1.0 and 0.0 <= report["top1"] <= 1.0
    files = {name: Path(entry["path"]) for name, entry in report["files"].items()}
    with open(files["predictions.csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {r["label"] for r in rows} == set(CLASSES)
    assert all(len(r["top5"].split()) == 4 for r in rows)
    per_class = list(csv.DictReader(files["per_class.csv"].read_text().splitlines()))
    assert [r["class"] for r in per_class] == list(CLASSES)
    assert files["confusion.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files["summary.json"].read_text())["top1"] == report["top1"]
    for entry in report["files"].values():
        assert local_store.exists(local_store.key_from_uri(entry["uri"]))
    assert "UNREADABLE_VIDEO" in (tmp_path / "eval" / "rejections.jsonl").read_text()


def test_weak_label_checkpoint_fine_tunes(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    # A curated manifest in the store: clip URIs with hashtag labels plus labels.json.
    lines, hashtags = [], {"#left": 0, "#right": 1, "#up": 2, "#down": 3, "#dance": 4}
    for number, line in enumerate(shapes["train"].read_text().splitlines()):
        path, label = line.split()
        ref = local_store.put_file(local_store.clip_key(f"{number:064x}", 0, 16), Path(path))
        lines.append(f"{ref.uri} {label}")
    local_store.put_lines(local_store.manifest_key("weak", "train.csv"), lines)
    local_store.put_json(local_store.manifest_key("weak", "labels.json"), hashtags)

    config = resolve_config(
        "weak-label", "tiny_weak_label", manifest="manifests/weak/",
        output=str(tmp_path / "weak"), overrides=_QUICK, store=local_store,
    )  # fmt: skip
    weak = run("weak-label", config, local_store)
    state = torch.load(
        local_store.download(local_store.key_from_uri(weak.checkpoint), tmp_path / "w.pth"),
        weights_only=True,
    )
    assert state["model"]["head.weight"].shape[0] == len(hashtags)
    assert state["classes"] == list(hashtags)

    # Fine-tuning on the 4 direction classes from it: the 5-way head is dropped, the rest loads.
    tuned = run(
        "finetune",
        resolve_config(
            "finetune", "tiny_finetune", manifest=str(shapes["train"]),
            output=str(tmp_path / "ft"),
            overrides=(*_QUICK, f"model.init_checkpoint={json.dumps(weak.checkpoint)}"),
            store=local_store,
        ),
        local_store,
    )  # fmt: skip
    assert tuned.steps == 2
    first = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert first["model"]["init_checkpoint"] == weak.checkpoint


def test_pretrained_checkpoint_fine_tunes_and_a_wrong_one_fails(
    shapes: dict[str, Path], local_store: ClipStore, tmp_path: Path
) -> None:
    pretrained = run(
        "pretrain",
        resolve_config("pretrain", "tiny_pretrain", manifest=str(shapes["train"]),
                       output=str(tmp_path / "pt"), overrides=_QUICK, store=local_store),
        local_store,
    )  # fmt: skip
    start = f"model.init_checkpoint={json.dumps(pretrained.checkpoint)}"
    tuned = run(
        "finetune",
        resolve_config("finetune", "tiny_finetune", manifest=str(shapes["train"]),
                       output=str(tmp_path / "ft"), overrides=(*_QUICK, start), store=local_store),
        local_store,
    )  # fmt: skip
    assert tuned.steps == 2
    # The encoder weights arrived: block 0 starts from the pre-trained values, not a fresh init.
    key = local_store.key_from_uri(pretrained.checkpoint)
    pre = torch.load(local_store.download(key, tmp_path / "p.pth"), weights_only=True)["model"]
    fresh = create_classifier(
        "vit_small_patch16_224", 4, num_frames=8, img_size=32, patch_size=8,
        embed_dim=64, depth=2, num_heads=4,
    )  # fmt: skip
    report = load_checkpoint(fresh, pre)
    assert torch.equal(fresh.blocks[0].attn.q_bias, pre["encoder.blocks.0.attn.q_bias"])
    assert set(report.missing_keys) <= {
        "fc_norm.weight",
        "fc_norm.bias",
        "head.weight",
        "head.bias",
    }

    # A checkpoint that fills one tensor is refused, never evaluated with random weights.
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"blocks.0.attn.q_bias": torch.zeros(64)}}, wrong)
    with pytest.raises(ValueError, match="unfilled"):
        run(
            "evaluate",
            resolve_config("evaluate", "tiny_finetune", output=str(tmp_path / "bad"),
                           store=local_store,
                           overrides=(f"data.test={json.dumps(str(shapes['test']))}",
                                      f"model.init_checkpoint={json.dumps(str(wrong))}")),
            local_store,
        )  # fmt: skip
