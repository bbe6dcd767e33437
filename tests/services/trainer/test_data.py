"""Readers of every list format, clip sampling, store manifests and unreadable videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from services.common.records import Rejection
from services.common.store import ClipStore
from services.trainer.data import (
    MultiViewDataset,
    ResumableSampler,
    VideoDataset,
    VideoEntry,
    build_loader,
    collate,
    read_class_names,
    read_entries,
    read_hmdb51,
    read_kinetics_csv,
    read_list,
    read_ssv2,
    read_ucf101,
    train_window,
    view_windows,
)
from services.trainer.masking import RunningCellMasking, TubeMasking
from services.trainer.synthetic import CLASSES, write_moving_shapes
from services.trainer.transforms import eval_views, pretrain_transform


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_moving_shapes(tmp_path_factory.mktemp("shapes"), 2, 16, 32, seed=1)


def test_list_files_space_comma_and_pretrain_lines(tmp_path: Path) -> None:
    text = "a/x.mp4 3\nb/y.mp4,7\n\n/abs/z.mp4 0 -1\ns3://bucket/clips/q.mp4 0 -1\n"
    entries = read_list(text, root=str(tmp_path), labelled=False)
    assert entries == [
        VideoEntry(str(tmp_path / "a/x.mp4"), 3),
        VideoEntry(str(tmp_path / "b/y.mp4"), 7),
        VideoEntry("/abs/z.mp4", 0),
        VideoEntry("s3://bucket/clips/q.mp4", 0),
    ]
    with pytest.raises(ValueError, match="line 1"):
        read_list("lonely.mp4\n", labelled=True)


def test_ucf101_official_splits(tmp_path: Path) -> None:
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 YoYo\n")
    (tmp_path / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nYoYo/v_YoYo_g09_c02.avi 3\r\n"
    )
    (tmp_path / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    train = read_ucf101(tmp_path, 1, "train", "/data/UCF-101")
    test = read_ucf101(tmp_path, 1, "test", "/data/UCF-101")
    assert [e.label for e in train] == [0, 2]
    assert train[1].path == "/data/UCF-101/YoYo/v_YoYo_g09_c02.avi"
    assert test == [VideoEntry("/data/UCF-101/Archery/v_Archery_g01_c01.avi", 1)]
    assert read_class_names(tmp_path / "classInd.txt") == ["ApplyEyeMakeup", "Archery", "YoYo"]


def test_hmdb51_split_tags(tmp_path: Path) -> None:
    (tmp_path / "wave_test_split1.txt").write_text("w1.avi 1 \nw2.avi 2 \nw3.avi 0 \n")
    (tmp_path / "brush_hair_test_split1.txt").write_text("b1.avi 2\nb2.avi 1\n")
    (tmp_path / "wave_test_split2.txt").write_text("w1.avi 2\n")
    train = read_hmdb51(tmp_path, 1, "train", "/hmdb")
    test = read_hmdb51(tmp_path, 1, "test", "/hmdb")
    # Classes sorted by name: brush_hair 0, wave 1; tag 0 is in neither subset.
    assert train == [VideoEntry("/hmdb/brush_hair/b2.avi", 0), VideoEntry("/hmdb/wave/w1.avi", 1)]
    assert test == [VideoEntry("/hmdb/brush_hair/b1.avi", 0), VideoEntry("/hmdb/wave/w2.avi", 1)]


def test_kinetics_csv_names_files_by_id_and_times(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "riding a bike,abc123,14,24,train\n"
        "abseiling,---QUuC4vJs,84.0,94.0,train\n"
    )
    entries = read_kinetics_csv(csv, "/k400/train")
    assert entries == [
        VideoEntry("/k400/train/abc123_000014_000024.mp4", 1),
        VideoEntry("/k400/train/---QUuC4vJs_000084_000094.mp4", 0),
    ]


def test_ssv2_templates_without_brackets(tmp_path: Path) -> None:
    labels = {"Putting something on a surface": "1", "Pushing something from left to right": "0"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    items = [
        {"id": "78687", "template": "Pushing [something] from left to right", "label": "x"},
        {"id": "42326", "template": "Putting [something] on a surface", "label": "y"},
    ]
    (tmp_path / "validation.json").write_text(json.dumps(items))
    entries = read_ssv2(tmp_path / "labels.json", tmp_path / "validation.json", "/ssv2")
    assert entries == [VideoEntry("/ssv2/78687.webm", 0), VideoEntry("/ssv2/42326.webm", 1)]
    source = f"{tmp_path / 'labels.json'}#{tmp_path / 'validation.json'}"
    assert read_entries(source, "ssv2", "/ssv2", "test") == entries
    assert read_class_names(tmp_path / "labels.json")[0] == "Pushing something from left to right"


def test_store_manifest_with_clip_uris(shapes: dict[str, Path], local_store: ClipStore) -> None:
    path, label = shapes["train"].read_text().splitlines()[0].split()
    ref = local_store.put_file(local_store.clip_key("a" * 64, 0, 16), Path(path))
    key = local_store.manifest_key("demo", "train.csv")
    local_store.put_lines(key, [f"{ref.uri} {label}"])
    entries = read_entries(local_store.uri(key), "list", "", "train", local_store)
    assert entries == read_entries(key, "list", "", "train", local_store)
    dataset = VideoDataset(
        entries, pretrain_transform(32, (1.0, 0.75), False), 8, 2, 2, store=local_store
    )
    clips, labels, masks, index = dataset[(0, 0)]
    assert clips.shape == (2, 3, 8, 32, 32) and labels.tolist() == [int(label)] * 2
    assert masks is None and index == 0


def test_sampling_windows() -> None:
    rng = np.random.default_rng(0)
    import random

    for length in (5, 40, 300):
        indices = train_window(length, 16, 4, random.Random(int(rng.integers(1 << 30))))
        assert len(indices) == 16 and max(indices) < length
        if length >= 64:  # the reference's linspace over 64 frames: steps of 4.27
            assert set(np.diff(indices)) <= {4, 5}
    views = view_windows(100, 16, 4, 5)  # starts int(k * 2.25) of a 25-frame stride-4 buffer
    assert [v[0] for v in views] == [0, 8, 16, 24, 36] and views[-1][-1] == 96
    tsn = view_windows(32, 8, 2, 2, tsn=True)  # offsets 0 and 0.5 of a 4-frame part
    assert tsn == [[0, 4, 8, 12, 16, 20, 24, 28], [2, 6, 10, 14, 18, 22, 26, 30]]


def test_items_are_seeded_by_epoch_and_index(shapes: dict[str, Path]) -> None:
    entries = read_list(shapes["train"].read_text(), labelled=True)
    model_grid = (4, 4, 4)
    tube, cell = TubeMasking(model_grid, 0.75), RunningCellMasking(model_grid, 0.5)
    dataset = VideoDataset(
        entries, pretrain_transform(32, (1.0, 0.875, 0.75, 0.66), False), 8, 2, 2,
        masks=lambda g: (tube(g), cell(g)), seed=3,
    )  # fmt: skip
    first, again, other = dataset[(0, 1)], dataset[(0, 1)], dataset[(1, 1)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[2], again[2])
    assert not torch.equal(first[2], other[2]) or not torch.equal(first[0], other[0])
    assert first[2].shape == (2, 2, 64) and first[2].dtype == torch.bool
    # Global RNGs are untouched by an item (a model's dropout draws stay where they were).
    state = torch.get_rng_state()
    dataset[(0, 2)]
    assert torch.equal(state, torch.get_rng_state())


def test_sampler_resumes_mid_epoch_in_the_same_order() -> None:
    sampler = ResumableSampler(10, rank=0, world=1, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    ranks = [ResumableSampler(10, rank=r, world=2, seed=5) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    assert sorted(i for r in ranks for _, i in r) == sorted(i for _, i in full)


def test_unreadable_videos_are_reported_and_counted(
    shapes: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    good = read_list(shapes["val"].read_text(), labelled=True)[:2]
    entries = [good[0], VideoEntry(str(broken), 1), good[1], VideoEntry(str(empty), 2)]
    dataset = VideoDataset(entries, pretrain_transform(32, (1.0,), False), 8, 2)
    sampler = ResumableSampler(len(entries), 0, 1, seed=0, shuffle=False)
    batches = list(build_loader(dataset, 4, 0, sampler))
    assert len(batches) == 1
    batch = batches[0]
    assert batch.items[0].shape[0] == 2 and batch.items[3].tolist() == [0, 2]
    assert sorted(r.source for r in batch.rejections) == sorted([str(broken), str(empty)])
    assert {r.reason for r in batch.rejections} == {"UNREADABLE_VIDEO"}
    views = MultiViewDataset(entries, lambda f: eval_views(f, 32, 3), 8, 2, segments=2)
    assert isinstance(views[1], Rejection)
    out = collate([views[0], views[1]])
    assert out.items[0].shape == (1, 6, 3, 8, 32, 32) and len(out.rejections) == 1


def test_synthetic_set_layout(shapes: dict[str, Path]) -> None:
    assert read_class_names(shapes["classes"]) == list(CLASSES)
    train = read_list(shapes["train"].read_text(), labelled=True)
    assert len(train) == 2 * len(CLASSES) and all(Path(e.path).is_file() for e in train)
    assert sorted({e.label for e in train}) == [0, 1, 2, 3]
