"""Real `h2a curate` processes into one dataset: concurrent writers on the local store and on S3
(moto on loopback), SIGKILL at random instants, an S3 outage mid-run, self-repair of corrupted
objects, and purge of a dataset written by concurrent runs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from services.collection.retention import purge_source
from services.common.config import StoreSettings
from services.common.dataset import Dataset
from services.common.records import Rejection
from services.common.store import ClipStore
from services.common.video import write_clip
from services.curation.curate import CurateSettings, LocalStages, curate

# The console script the project installs, beside the interpreter running the tests.
H2A = [str(Path(sys.executable).parent / "h2a")]
EXISTING = 20_000


def _env(settings: StoreSettings, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("H2A_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        secret = getattr(value, "get_secret_value", None)
        env[f"H2A_STORE_{name.upper()}"] = str(secret() if secret else value)
    return {**env, **extra}


def _settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> StoreSettings:
    if backend == "local":
        return StoreSettings(backend="local", root=tmp_path / "store")
    return request.getfixturevalue("s3_settings")


def _bad_inputs(folder: Path, count: int, tag: str) -> list[str]:
    """Files named .mp4 that hold text: each a fast, typed rejection of a real run."""
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = folder / f"{tag}-{index:02d}.mp4"
        path.write_text(f"not a video {tag} {index}\n")
        paths.append(str(path))
    return paths


def _curate(folder: Path, env: dict[str, str], out: Path, *args: str) -> subprocess.Popen:
    command = [*H2A, "curate", str(folder), "--dataset", "big", "--out", str(out), "--no-progress"]
    return subprocess.Popen(
        [*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.parametrize("writers", [2, 4])
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_concurrent_runs_into_a_large_dataset_lose_and_duplicate_nothing(
    backend: str, writers: int, tmp_path: Path, request: pytest.FixtureRequest
):
    settings = _settings(backend, tmp_path, request)
    store = ClipStore.from_settings(settings)
    dataset = Dataset(store, "big")
    old = [Rejection(f"old-{i}", "ingestion", "UNREADABLE_VIDEO", "x") for i in range(EXISTING)]
    dataset.add(old)
    inputs = [_bad_inputs(tmp_path / f"w{w}", 15, f"w{w}") for w in range(writers)]
    env = _env(settings)
    runs = [_curate(tmp_path / f"w{w}", env, tmp_path / f"out{w}") for w in range(writers)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0] * writers, outputs
    snapshot = dataset.snapshot()
    sources = [r.source for r in snapshot.rejections]
    assert len(sources) == len(set(sources)) == EXISTING + 15 * writers
    assert set(sources) >= {path for paths in inputs for path in paths}
    # The published list is complete too: the last publisher saw every commit.
    published = store.get_lines(dataset.view_key("rejections.jsonl"))
    assert len(published) == EXISTING + 15 * writers


def _no_temporary_files(root: Path) -> list[str]:
    left = [p for p in (root / "_tmp").rglob("*") if p.is_file() and p.name != ".lock"]
    left += [p for p in (root / "_tmp").glob("h2a-scratch/*") if p.is_dir()]
    return [str(p) for p in left]


def test_sigkill_at_random_instants_then_a_run_completes_the_dataset(
    tmp_path: Path, carphone: Path
):
    source = tmp_path / "src"
    inputs = _bad_inputs(source / "bad", 8, "bad")
    (source / "talking").mkdir()
    (source / "talking" / "carphone.mp4").write_bytes(carphone.read_bytes())
    inputs.append(str(source / "talking" / "carphone.mp4"))
    settings = StoreSettings(backend="local", root=tmp_path / "store")
    # A commit per outcome: kills land in commits and publishes as often as in the stages.
    env = _env(settings, H2A_CURATE_COMMIT_EVERY="1")
    started = time.monotonic()
    reference_env = _env(StoreSettings(root=tmp_path / "ref"), H2A_CURATE_COMMIT_EVERY="1")
    reference = _curate(source, reference_env, tmp_path / "o")
    reference.communicate(timeout=300)
    span = time.monotonic() - started
    assert reference.returncode == 0
    generator = random.Random(8)
    for _ in range(8):
        run = _curate(source, env, tmp_path / "out")
        time.sleep(generator.uniform(0.2, span))
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=60)
    final = _curate(source, env, tmp_path / "out")
    output = final.communicate(timeout=300)[0]
    assert final.returncode == 0, output
    snapshot = Dataset(ClipStore.from_settings(settings), "big").snapshot()
    outcomes = [r.source for r in (*snapshot.clips, *snapshot.rejections, *snapshot.review)]
    assert sorted(outcomes) == sorted(inputs) and not snapshot.pending
    assert [Path(c.source).name for c in snapshot.clips] == ["carphone.mp4"]
    assert _no_temporary_files(tmp_path / "store") == []


class _Outage(LocalStages):
    """The S3 endpoint goes away while one video is at the person stage, and comes back."""

    def __init__(self, store: ClipStore, server: list[ThreadedMotoServer], port: int) -> None:
        super().__init__(store, CurateSettings())
        self.server, self.port, self.done = server, port, False

    def persons(self, video, scene):
        if self.done:
            return super().persons(video, scene)
        self.done = True
        self.server[0].stop()
        try:
            return super().persons(video, scene)
        finally:
            self.server[0] = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)
            self.server[0].start()


def test_an_s3_outage_leaves_its_videos_for_the_next_run(tmp_path: Path, carphone: Path):
    server = [ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)]
    server[0].start()
    host, port = server[0].get_host_and_port()
    try:
        settings = StoreSettings(
            backend="s3", endpoint=f"{host}:{port}", bucket="outage", region="us-east-1",
            access_key="a", secret_key="b", timeout_s=2.0, retries=0,
        )  # fmt: skip
        store = ClipStore.from_settings(settings)
        source = tmp_path / "src"
        _bad_inputs(source / "bad", 2, "bad")
        (source / "talking").mkdir()
        (source / "talking" / "carphone.mp4").write_bytes(carphone.read_bytes())
        broken = curate(str(source), _Outage(store, server, port), store, "s3", 1, False)
        (failed,) = broken.failed
        assert (Path(failed.source).name, failed.reason) == ("carphone.mp4", "STORE_UNAVAILABLE")
        snapshot = Dataset(store, "s3").snapshot()
        assert [Path(p.source).name for p in snapshot.pending] == ["carphone.mp4"]
        assert "STORE_UNAVAILABLE" not in {r.reason for r in snapshot.rejections}
        assert len(snapshot.rejections) == 2 and not snapshot.clips
        healed = curate(str(source), LocalStages(store), store, "s3", 1, False)
        assert not healed.failed and healed.clips == 1
        snapshot = Dataset(store, "s3").snapshot()
        kinds: dict[str, list[str]] = {}
        for kind, records in (("clip", snapshot.clips), ("rejection", snapshot.rejections)):
            for record in records:
                kinds.setdefault(record.source, []).append(kind)
        assert all(len(found) == 1 for found in kinds.values()) and not snapshot.pending
        assert len(kinds) == 3 and not snapshot.review
    finally:
        server[0].stop()


def test_the_next_run_repairs_a_corrupted_raw_video_clip_and_list(tmp_path: Path, carphone):
    settings = StoreSettings(backend="local", root=tmp_path / "store")
    store = ClipStore.from_settings(settings)
    (tmp_path / "src" / "talking").mkdir(parents=True)
    (tmp_path / "src" / "talking" / "c.mp4").write_bytes(carphone.read_bytes())
    env = _env(settings)
    first = _curate(tmp_path / "src", env, tmp_path / "out")
    assert first.communicate(timeout=300)[0] and first.returncode == 0
    root = tmp_path / "store"
    (record,) = Dataset(store, "big").snapshot().clips
    raw = next(key for key in store.source_objects(record.source_id) if key.startswith("raw/"))
    corrupted = [raw, record.clip.key, Dataset(store, "big").view_key("pretrain.csv")]
    for key in corrupted:
        data = bytearray((root / key).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (root / key).write_bytes(bytes(data))
    second = _curate(tmp_path / "src", env, tmp_path / "out")
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    for key in corrupted:
        assert f"repaired:  {key}" in output
        assert store.verify(key) is not None
    assert store.get_bytes(record.clip.key) == (root / record.clip.key).read_bytes()


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_purge_of_a_dataset_written_by_concurrent_runs(
    backend: str, tmp_path: Path, carphone: Path, request: pytest.FixtureRequest
):
    settings = _settings(backend, tmp_path, request)
    store = ClipStore.from_settings(settings)
    env = _env(settings)
    for writer, crf in enumerate((23, 30)):
        _bad_inputs(tmp_path / f"w{writer}" / "bad", 3, f"w{writer}")
        (tmp_path / f"w{writer}" / "talking").mkdir()
        # Two encodings of the same footage: two sources.
        write_clip(carphone, tmp_path / f"w{writer}" / "talking" / "v.mp4", 0, 120, crf=crf)
    runs = [_curate(tmp_path / f"w{w}", env, tmp_path / f"out{w}") for w in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    dataset = Dataset(store, "big")
    before = dataset.snapshot()
    clips = {Path(c.source).parent.parent.name: c for c in before.all_clips()}
    assert sorted(clips) == ["w0", "w1"]
    # The same footage twice: one is the other's near-duplicate, whichever the purge removes.
    assert len(before.clips) == len(before.duplicates) == 1
    gone, kept = clips["w0"], clips["w1"]
    report = purge_source(store, gone.source_id)
    assert report.records == {"big": 1}
    snapshot = dataset.snapshot()
    assert [c.source_id for c in snapshot.clips] == [kept.source_id]
    assert len(snapshot.rejections) == 6  # the bad inputs of both runs are untouched
    assert store.source_objects(gone.source_id) == []
    assert store.verify(kept.clip.key) is not None
    published = store.get_lines(dataset.view_key("pretrain.csv"))
    assert published == [f"{kept.clip.uri} 0 -1"]
