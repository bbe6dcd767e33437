"""A whole curation batch on real media with the real detector: clips, review, rejections,
and retries of sources that broke off on a retryable failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.clips.encode import ClipSettings
from services.common.config import StoreSettings
from services.common.dataset import REVIEW_REASON, VIEW_NAMES, Dataset
from services.common.records import ClipRecord, Rejection
from services.common.store import ClipStore
from services.common.video import probe
from services.curation.commands import EXIT_RETRY
from services.curation.commands import curate as curate_command
from services.curation.curate import (
    CurateSettings,
    CurateSummary,
    LocalStages,
    curate,
    export_dataset,
)
from services.ingestion.sources import IngestSettings

# bikes' longest scene (frames 76-137) lasts 2.44 s: below the paper's 3.5 s it is TOO_SHORT,
# so the batch lowers the bound to see bikes become a clip cut inside that scene.
CLIPS = ClipSettings(min_seconds=2.0)
# The loopback server is trusted by name; everything it redirects to is checked again.
INGEST = IngestSettings(allowed_hosts=["localhost"])

EXPECTED_REJECTIONS = {
    "bad/zero.mp4": ("ingestion", "UNREADABLE_VIDEO"),
    "bad/truncated.mp4": ("ingestion", "UNREADABLE_VIDEO"),
    "bad/text.mp4": ("ingestion", "UNREADABLE_VIDEO"),
    "bad/audio.mp4": ("ingestion", "NO_VIDEO_STREAM"),
    "bad/oneframe.mp4": ("ingestion", "FILTERED_OUT"),
    "bad/missing.mp4": ("ingestion", "SOURCE_NOT_FOUND"),
    "http-404": ("ingestion", "SOURCE_NOT_FOUND"),
    "http-redirect-private": ("ingestion", "INVALID_SOURCE"),
    "traversal": ("ingestion", "INVALID_SOURCE"),
}


@pytest.fixture(scope="module")
def batch(
    media: Path, http_base: str, closed_port: int, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ClipStore, Path, list[CurateSummary]]:
    """The batch manifest, curated twice into one store."""
    folder = tmp_path_factory.mktemp("batch")
    port = http_base.rsplit(":", 1)[1]
    rows = [
        {"url": str(media / "cycling/bikes.mp4"), "hashtag": "cycling", "view_count": 5},
        {"url": str(media / "talking/carphone_pristine.mp4"), "hashtag": "talking"},
        {"url": str(media / "cartoon/bigbuckbunny.mp4"), "hashtag": "cartoon"},
        *(
            {"url": str(media / name), "hashtag": "bad", "case": name}
            for name in EXPECTED_REJECTIONS
            if name.startswith("bad/")
        ),
        {"url": f"http://localhost:{port}/nope.mp4", "hashtag": "bad", "case": "http-404"},
        {"url": f"http://localhost:{closed_port}/v.mp4", "hashtag": "bad", "case": "http-refused"},
        {
            "url": f"http://localhost:{port}/redirect/talking/carphone_pristine.mp4",
            "hashtag": "bad",
            "case": "http-redirect-private",
        },
        {"url": str(media / "talking/../../etc/v.mp4"), "hashtag": "bad", "case": "traversal"},
    ]
    manifest = folder / "batch.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    store = ClipStore.from_settings(StoreSettings(backend="local", root=folder / "store"))
    stages = LocalStages(store, CurateSettings(ingest=INGEST, clips=CLIPS))
    runs = [
        curate(
            str(manifest), stages, store, "batch", workers=2, progress=False, clip_settings=CLIPS
        )
        for _ in range(2)
    ]
    return store, manifest, runs


def _lines(store: ClipStore, name: str) -> list[str]:
    return store.get_lines(ClipStore.manifest_key("batch", name))


def test_every_bad_input_is_a_typed_rejection(batch):
    store, manifest, (first, _) = batch
    cases = {
        row["url"]: row["case"]
        for row in map(json.loads, manifest.read_text().splitlines())
        if "case" in row
    }
    rejections = [Rejection.from_json(line) for line in _lines(store, "rejections.jsonl")]
    assert {cases[r.source]: (r.stage, r.reason) for r in rejections} == EXPECTED_REJECTIONS
    assert first.rejected == len(rejections) == len(EXPECTED_REJECTIONS)
    assert all(r.detail and r.context["hashtag"] == "bad" for r in rejections)


def test_a_refused_download_is_a_failed_attempt_not_a_rejection(batch):
    """Connection refused says nothing about the video: no outcome, retried by the next run."""
    store, manifest, (first, second) = batch
    refused = next(
        row["url"] for row in map(json.loads, manifest.read_text().splitlines())
        if row.get("case") == "http-refused"
    )  # fmt: skip
    for run in (first, second):
        (attempt,) = run.failed
        assert (attempt.source, attempt.stage, attempt.reason) == (
            refused,
            "ingestion",
            "DOWNLOAD_FAILED",
        )
    snapshot = Dataset(store, "batch").snapshot()
    assert [p.source for p in snapshot.pending] == [refused]
    assert snapshot.attempts[refused] == 2
    assert refused not in {r.source for r in (*snapshot.rejections, *snapshot.review)}


def test_every_input_has_exactly_one_current_outcome(batch):
    store, manifest, _ = batch
    inputs = [row["url"] for row in map(json.loads, manifest.read_text().splitlines())]
    snapshot = Dataset(store, "batch").snapshot()
    outcomes = [
        r.source
        for r in (*snapshot.clips, *snapshot.review, *snapshot.rejections, *snapshot.pending)
    ]
    assert sorted(outcomes) == sorted(inputs)


def test_bikes_clip_lies_inside_the_longest_scene_with_persons(batch):
    store, _, _ = batch
    clips = {r.hashtag: r for r in map(ClipRecord.from_json, _lines(store, "clips.jsonl"))}
    bikes = clips["cycling"]
    assert bikes.metadata["scene"] == [76, 137] and bikes.metadata["scenes"] == 6
    assert 76 <= bikes.start_frame < bikes.end_frame <= 137
    assert bikes.person_frames >= 5 and len(bikes.person_scores) == 10
    assert bikes.metadata["view_count"] == 5  # platform metadata travels with the clip
    with store.open_local(bikes.clip) as path:
        info = probe(path)
    assert info.frame_count == bikes.end_frame - bikes.start_frame
    assert (info.short_side, info.codec) == (320, "h264")


def test_carphone_becomes_one_clip_of_at_least_3_5_seconds(batch):
    store, _, _ = batch
    (talking,) = [
        r for r in map(ClipRecord.from_json, _lines(store, "clips.jsonl")) if r.hashtag == "talking"
    ]
    assert talking.duration_s >= 3.5
    assert (talking.start_frame, talking.end_frame) == (0, 120)
    assert talking.person_frames == 10


def test_cartoon_lands_in_the_review_list_with_its_scores(batch):
    """What the pose model really does on Big Buck Bunny: one frame above 0.5, so review."""
    store, _, _ = batch
    (review,) = map(Rejection.from_json, _lines(store, "review.jsonl"))
    assert review.source.endswith("bigbuckbunny.mp4")
    assert (review.stage, review.reason) == ("persons", REVIEW_REASON)
    scores = review.context["scores"]
    assert len(scores) == len(review.context["frame_indices"]) == 10
    assert 0 < sum(score >= 0.5 for score in scores) < 5
    assert sum(score > 0 for score in scores) > sum(score >= 0.5 for score in scores), "near misses"


def test_second_run_adds_nothing_and_loses_nothing(batch):
    store, _, (first, second) = batch
    assert (first.clips_added, second.clips_added) == (2, 0)
    assert second.clips_total == 2 and len(_lines(store, "review.jsonl")) == 1
    assert len(first.parts) == len(second.parts) == 1  # a run commits its records as one part
    assert len(_lines(store, "rejections.jsonl")) == len(EXPECTED_REJECTIONS)
    assert len(store.list("clips/")) == 2
    labels = store.get_json(ClipStore.manifest_key("batch", "labels.json"))
    assert labels == {"cycling": 0, "talking": 1}
    train = _lines(store, "train.csv")
    pretrain = _lines(store, "pretrain.csv")
    assert len(train) == len(pretrain) == 2
    for train_line, pretrain_line in zip(train, pretrain, strict=True):
        uri, label = train_line.split(" ")
        assert pretrain_line == f"{uri} 0 -1" and int(label) in labels.values()
        assert store.exists(store.key_from_uri(uri))


def test_report_and_export(batch, tmp_path: Path):
    store, _, (_, second) = batch
    assert set(second.manifests) == set(VIEW_NAMES)
    local = export_dataset(store, "batch", tmp_path / "out")
    report = (local / "report.md").read_text()
    assert "2 clips" in report and "| TOO_FEW_PERSON_FRAMES | 1 |" in report
    # Table C1 bins of the source videos: carphone 4.0 s, bikes 10.0 s.
    assert "| 3.5-5 s | 1 |" in report and "| 10+ s | 1 |" in report
    plots = sorted(p.name for p in (local / "plots").iterdir())
    assert plots == ["clips_per_hashtag.png", "count_ranges.png", "durations.png", "rejections.png"]
    assert all((local / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)


def test_cli_curates_a_folder_embedded(carphone: Path, tmp_path: Path, monkeypatch):
    (tmp_path / "src" / "talking").mkdir(parents=True)
    (tmp_path / "src" / "talking" / "c.mp4").write_bytes(carphone.read_bytes())
    monkeypatch.setenv("H2A_STORE_ROOT", str(tmp_path / "store"))
    result = CliRunner().invoke(
        curate_command,
        [
            str(tmp_path / "src"),
            "--dataset",
            "cli",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 new clips" in result.output
    assert (tmp_path / "out" / "cli" / "train.csv").read_text().endswith(" 0\n")
    bad = CliRunner().invoke(curate_command, [str(tmp_path / "src"), "--services", "scenes=x"])
    assert bad.exit_code == 2 and "NAME=HOST:PORT" in bad.output


def test_cli_exits_for_a_retry_then_gives_up_after_max_attempts(
    carphone: Path, closed_port: int, tmp_path: Path, monkeypatch
):
    refused = f"http://localhost:{closed_port}/v.mp4"
    manifest = tmp_path / "sources.jsonl"
    rows = [{"url": str(carphone), "hashtag": "talking"}, {"url": refused, "hashtag": "talking"}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setenv("H2A_STORE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("H2A_INGEST_ALLOWED_HOSTS", '["localhost"]')
    monkeypatch.setenv("H2A_CURATE_MAX_ATTEMPTS", "2")
    arguments = [str(manifest), "--dataset", "retry", "--out", str(tmp_path / "out")]
    first = CliRunner().invoke(curate_command, [*arguments, "--no-progress"])
    assert first.exit_code == EXIT_RETRY, first.output
    assert "1 to retry" in first.output and f"{refused}: ingestion DOWNLOAD_FAILED" in first.output
    second = CliRunner().invoke(curate_command, [*arguments, "--no-progress"])
    # The second failure in a row reaches max_attempts: a rejection, and the run is complete.
    assert second.exit_code == 0, second.output
    assert "0 to retry" in second.output and "DOWNLOAD_FAILED: 1" in second.output
    store = ClipStore.from_settings(StoreSettings(backend="local", root=tmp_path / "store"))
    snapshot = Dataset(store, "retry").snapshot()
    assert [r.source for r in snapshot.rejections] == [refused] and not snapshot.pending
    assert "failed 2 times in a row" in snapshot.rejections[0].detail
    assert len(snapshot.clips) == 1
