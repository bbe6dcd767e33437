"""The contamination guard: a planted benchmark video (a re-encoded copy of a curated clip's
footage) is flagged and left out of pretrain.csv, from a folder or a list file, local or in the
store; ``--keep`` only reports; signatures of benchmark videos are cached by sha256."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from services.common.config import StoreSettings
from services.common.dataset import Dataset
from services.common.records import ClipMedia, ClipRecord, ObjectRef
from services.common.signatures import clip_signature
from services.common.store import ClipStore
from services.common.video import read_frames, write_frames
from services.curation.commands import dataset as dataset_command
from services.curation.contamination import check_contamination
from services.curation.report import REPORT_NAME


@pytest.fixture(scope="module")
def videos(
    bikes: Path, carphone: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two curated clips (a bikes shot, carphone) and a benchmark test video that is the bikes
    shot re-encoded at crf 32 and mirrored, beside an unrelated one (bigbuckbunny-like noise)."""
    folder = tmp_path_factory.mktemp("contamination")
    shot = read_frames(bikes, range(76, 137))
    paths = {"shot": folder / "shot.mp4", "talk": folder / "talk.mp4"}
    write_frames(paths["shot"], shot)
    write_frames(paths["talk"], read_frames(carphone, range(120)))
    bench = folder / "ucf101"
    write_frames(bench / "v_Biking_g01_c01.mp4", np.ascontiguousarray(shot[:, :, ::-1]), crf=32)
    rng = np.random.default_rng(0)
    write_frames(bench / "v_Other_g01_c01.mp4", rng.integers(0, 255, (30, 64, 96, 3), np.uint8))
    return {**paths, "bench": bench}


def _record(path: Path, source_id: str, hashtag: str) -> ClipRecord:
    key = ClipStore.clip_key(source_id, 0, 100)
    media = ClipMedia(100, 25.0, 4.0, 320, 136, "h264", 32, 0, clip_signature(path).to_hex())
    ref = ObjectRef(key, f"file:///store/{key}", "0" * 64, 10)
    return ClipRecord(ref, source_id, str(path), hashtag, 0, 100, 25.0, 8, media=media)


@pytest.fixture()
def curated(videos: dict[str, Path], local_store: ClipStore) -> Dataset:
    dataset = Dataset(local_store, "d")
    dataset.add(
        [_record(videos["shot"], "a" * 64, "cycling"), _record(videos["talk"], "b" * 64, "talking")]
    )
    dataset.publish()
    return dataset


def test_a_planted_benchmark_video_is_flagged_and_left_out(
    curated: Dataset, videos: dict[str, Path], local_store: ClipStore
):
    [check] = check_contamination(local_store, "d", {"ucf101": str(videos["bench"])})
    assert check.videos == 2 and check.per_hashtag == {"cycling": 1}
    [match] = check.matches
    assert match["clip"] == ClipStore.clip_key("a" * 64, 0, 100)
    assert match["video"].endswith("v_Biking_g01_c01.mp4")
    snapshot = curated.publish()
    assert [c.hashtag for c in snapshot.clips] == ["talking"]
    [flagged] = snapshot.contaminated
    assert flagged.benchmark == "ucf101" and flagged.clip.hashtag == "cycling"
    pretrain = local_store.get_lines(curated.view_key("pretrain.csv"))
    assert pretrain == [f"{snapshot.clips[0].clip.uri} 0 -1"]
    line = json.loads(local_store.get_lines(curated.view_key("contamination.jsonl"))[0])
    assert line["outcome"] == "CONTAMINATED" and line["benchmark"] == "ucf101"
    # Cached by content: a second check signs nothing.
    cached = local_store.list("state/d/signatures/")
    assert len(cached) == 2
    [again] = check_contamination(local_store, "d", {"ucf101": str(videos["bench"])}, keep=True)
    assert again.matches == check.matches and local_store.list("state/d/signatures/") == cached


def test_a_list_file_in_the_store_and_a_newer_check_replacing_the_old(
    curated: Dataset, videos: dict[str, Path], local_store: ClipStore
):
    for video in sorted(videos["bench"].iterdir()):
        local_store.put_file(f"benchmarks/ucf101/videos/{video.name}", video)
    local_store.put_text("benchmarks/ucf101/test.csv", "videos/v_Biking_g01_c01.mp4 3\n")
    [check] = check_contamination(
        local_store, "d", {"ucf101": local_store.uri("benchmarks/ucf101/test.csv")}
    )
    assert check.videos == 1 and len(check.matches) == 1
    assert len(curated.snapshot().contaminated) == 1
    local_store.put_text("benchmarks/ucf101/test.csv", "videos/v_Other_g01_c01.mp4 3\n")
    check_contamination(local_store, "d", {"ucf101": "benchmarks/ucf101/test.csv"})
    snapshot = curated.snapshot()
    assert not snapshot.contaminated and len(snapshot.clips) == 2
    assert snapshot.checks["ucf101"]["videos"] == 1


def test_cli_end_to_end_on_a_local_store(
    curated: Dataset,
    videos: dict[str, Path],
    local_store: ClipStore,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("H2A_STORE_BACKEND", "local")
    monkeypatch.setenv("H2A_STORE_ROOT", local_store.describe())
    assert ClipStore.from_settings(StoreSettings()).describe() == local_store.describe()
    runner = CliRunner()
    args = ["contamination", "d", "--benchmark", f"ucf101={videos['bench']}"]
    kept = runner.invoke(dataset_command, [*args, "--keep"])
    assert kept.exit_code == 0, kept.output
    assert "ucf101: 1 clips match 2 videos" in kept.output and "#cycling: 1" in kept.output
    assert len(local_store.get_lines(curated.view_key("pretrain.csv"))) == 2  # only reported
    result = runner.invoke(dataset_command, args)
    assert result.exit_code == 0, result.output
    assert "1 clips left out" in result.output
    assert len(local_store.get_lines(curated.view_key("pretrain.csv"))) == 1
    report = local_store.get_text(curated.view_key(REPORT_NAME))
    assert "## Benchmark contamination" in report and "v_Biking_g01_c01.mp4" in report
    bad = runner.invoke(dataset_command, ["contamination", "d", "--benchmark", "ucf101"])
    assert bad.exit_code == 2 and "NAME=PATH_OR_URI" in bad.output
