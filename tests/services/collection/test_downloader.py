"""Media download: plain HTTP from a loopback server, downloader choice, and the whole path
collect -> download -> ingest -> purge on a real video."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from services.cli import main
from services.collection.downloader import HttpDownloader, YtDlpDownloader, select_downloader
from services.collection.planning import HashtagPlan, PlannedTag
from services.collection.research_api import ResearchClient, collect
from services.collection.retention import purge_source
from services.common.errors import ConfigError, InvalidSource, SourceNotFound
from services.curation.curate import LocalStages, curate
from services.ingestion.sources import IngestSettings, expand_source, ingest

from .conftest import make_videos


@pytest.fixture()
def media_server(carphone: Path) -> Any:
    """Serves the carphone video at any ``*.mp4`` path; 404 for paths holding 'gone'."""
    payload = carphone.read_bytes()
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            hits.append(self.path)
            if "gone" in self.path or not self.path.endswith(".mp4"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_http_download_and_reuse(media_server, carphone, tmp_path):
    base, hits = media_server
    downloader = HttpDownloader(IngestSettings(timeout_s=5, allow_private_networks=True))
    first = downloader.fetch(f"{base}/a/1.mp4", tmp_path)
    assert first.read_bytes() == carphone.read_bytes()
    assert downloader.fetch(f"{base}/a/1.mp4", tmp_path) == first and len(hits) == 1
    with pytest.raises(SourceNotFound, match="404"):
        downloader.fetch(f"{base}/gone/2.mp4", tmp_path)
    with pytest.raises(InvalidSource):
        downloader.fetch("ftp://example.com/x.mp4", tmp_path)
    with pytest.raises(InvalidSource, match="non-public"):  # the default refuses loopback
        HttpDownloader().fetch(f"{base}/a/3.mp4", tmp_path)
    assert not list(tmp_path.glob("*.part"))


def test_downloader_choice():
    has_ytdlp = importlib.util.find_spec("yt_dlp") is not None
    expected = YtDlpDownloader if has_ytdlp else HttpDownloader
    assert isinstance(select_downloader("auto"), expected)
    assert isinstance(select_downloader("http"), HttpDownloader)
    if not has_ytdlp:
        with pytest.raises(ConfigError, match="not installed"):
            select_downloader("yt-dlp")


def test_collect_download_ingest_purge(
    fake_api, research_settings, media_server, local_store, tmp_path
):
    api, _ = fake_api
    base, _ = media_server
    api.videos["piano"] = make_videos("piano", 6, 3)
    settings = research_settings.model_copy(
        update={"video_url_template": base + "/{username}/{id}.mp4"}
    )
    plan = HashtagPlan(
        (PlannedTag("piano", "everyday", ("noun_substitution",), ("x",), target_videos=3),)
    )
    out = tmp_path / "m.jsonl"
    summary = collect(
        plan,
        ResearchClient(settings),
        local_store,
        out,
        "dl",
        HttpDownloader(IngestSettings(allow_private_networks=True)),
        tmp_path / "media",
    )
    assert summary.kept == {"piano": 3}
    items = expand_source(str(out))
    assert all(Path(item.location).is_file() for item in items)
    assert items[0].metadata["page_url"].startswith(base)

    video = ingest(items[0], local_store, IngestSettings(min_duration_s=0.0))
    meta = local_store.get_json(video.meta.key)
    assert meta["metadata"]["rule"] == "noun_substitution"
    report = purge_source(local_store, video.source_id)
    assert video.meta.key in report.deleted and video.raw.key in report.deleted
    # The collection state no longer names the purged video's location.
    assert report.lines.get("state/collect/dl/piano.jsonl") == 1


def test_provenance_survives_curation_and_purge(
    fake_api, research_settings, carphone, bikes, local_store, tmp_path, monkeypatch
):
    """collect -> curate (the real in-process stages) -> `h2a store show` -> `h2a store purge`."""
    api, _ = fake_api
    api.videos["piano"] = make_videos("piano", 2, 1)
    api.videos["piano"][1]["allows_download"] = True
    media = tmp_path / "media"
    media.mkdir()
    (media / "1000.mp4").write_bytes(carphone.read_bytes())
    (media / "1001.mp4").write_bytes(bikes.read_bytes())
    settings = research_settings.model_copy(update={"video_url_template": str(media) + "/{id}.mp4"})
    plan = HashtagPlan(
        (PlannedTag("piano", "everyday", ("noun_substitution",), ("x",), target_videos=2),)
    )
    out = tmp_path / "m.jsonl"
    collect(plan, ResearchClient(settings), local_store, out, "e2e")
    summary = curate(str(out), LocalStages(local_store), local_store, "t", 1, progress=False)
    assert summary.clips_total >= 1
    clips_key = "manifests/t/clips.jsonl"
    record = json.loads(local_store.get_lines(clips_key)[0])
    assert record["metadata"]["rule"] == "noun_substitution"

    monkeypatch.setenv("H2A_STORE_ROOT", local_store.describe())
    monkeypatch.setenv("COLUMNS", "400")
    shown = CliRunner().invoke(main, ["store", "show", "--source", record["source_id"]])
    assert shown.exit_code == 0, shown.output
    assert "noun_substitution" in shown.output and "hashtag_name IN [piano]" in shown.output
    for key in local_store.list("meta/"):
        source_id = key.removeprefix("meta/").removesuffix(".json")
        purged = CliRunner().invoke(main, ["store", "purge", "--source", source_id])
        assert purged.exit_code == 0, purged.output
    assert local_store.list("raw/") == local_store.list("clips/") == []
    for name in ("clips.jsonl", "pretrain.csv", "train.csv", "review.jsonl", "rejections.jsonl"):
        assert local_store.get_lines(f"manifests/t/{name}") == []
