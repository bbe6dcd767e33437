"""Listing sources and ingesting one item: local, http on 127.0.0.1, manifests, filters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from services.common.errors import (
    DownloadFailed,
    FilteredOut,
    FrameTooLarge,
    InvalidSource,
    SourceNotFound,
    SourceTooLarge,
)
from services.common.store import ClipStore, file_sha256
from services.ingestion.sources import IngestSettings, SourceItem, expand_source, ingest

LOOPBACK_OK = IngestSettings(allow_private_networks=True)


def test_directory_lists_videos_with_their_folder_as_hashtag(media: Path):
    found = {(Path(i.location).name, i.hashtag) for i in expand_source(str(media))}
    assert {("bikes.mp4", "cycling"), ("carphone_pristine.mp4", "talking")} <= found
    assert ("zero.mp4", "bad") in found
    assert [i.hashtag for i in expand_source(str(media / "talking"), hashtag="tv")] == ["tv"]


def test_manifests_in_jsonl_and_csv(media: Path, tmp_path: Path):
    rows = [
        {
            "url": str(media / "talking" / "carphone_pristine.mp4"),
            "hashtag": "talking",
            "view_count": 7,
            "allows_download": True,
            "rule": "noun",
        },
        {"url": "https://example.org/v.mp4", "hashtag": "dance"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "local.mp4").write_bytes(b"")
    (tmp_path / "m.csv").write_text(
        "url,hashtag,view_count,allows_download,description\n"
        "local.mp4,piano,12000000,false,a piano video\n"
    )
    jsonl = expand_source(str(tmp_path / "m.jsonl"))
    assert jsonl[0] == SourceItem(
        rows[0]["url"], "talking", {"view_count": 7, "allows_download": True, "rule": "noun"}
    )
    assert jsonl[1].location == "https://example.org/v.mp4"
    (row,) = expand_source(str(tmp_path / "m.csv"))
    # Relative paths are relative to the manifest; strings are typed.
    assert row.location == str(tmp_path / "local.mp4")
    assert row.metadata == {
        "view_count": 12_000_000,
        "allows_download": False,
        "description": "a piano video",
    }


def test_unusable_sources_fail_typed(local_store: ClipStore, tmp_path: Path):
    with pytest.raises(SourceNotFound):
        expand_source(str(tmp_path / "nothing-here"))
    with pytest.raises(InvalidSource):
        expand_source("ftp://example.org/v.mp4")
    (tmp_path / "no-url.jsonl").write_text('{"hashtag": "dance"}\n')
    (row,) = expand_source(str(tmp_path / "no-url.jsonl"))  # one bad row, not a failed batch
    with pytest.raises(InvalidSource, match="no location"):
        ingest(row, local_store, IngestSettings())
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    (broken,) = expand_source(str(tmp_path / "broken.jsonl"))
    with pytest.raises(InvalidSource, match=r"broken\.jsonl:1: not JSON"):
        ingest(broken, local_store, IngestSettings())


def test_ingest_stores_raw_video_and_metadata(local_store: ClipStore, carphone: Path):
    item = SourceItem(str(carphone), "talking", {"view_count": 10, "query": "#talking"})
    video = ingest(item, local_store, IngestSettings())
    assert video.source_id == file_sha256(carphone)
    assert video.raw.key == ClipStore.raw_key(video.source_id, ".mp4")
    assert local_store.get_bytes(video.raw.key) == carphone.read_bytes()
    meta = local_store.get_json(ClipStore.meta_key(video.source_id))
    assert meta["probe"]["frame_count"] == 120 and meta["probe"]["path"] == video.raw.uri
    assert meta["metadata"] == item.metadata and meta["hashtag"] == "talking"
    # Ingesting again changes nothing in the store.
    assert ingest(item, local_store, IngestSettings()).meta == video.meta


def test_http_download(local_store: ClipStore, http_base: str, carphone: Path):
    item = SourceItem(f"{http_base}/talking/carphone_pristine.mp4", "talking", {})
    video = ingest(item, local_store, LOOPBACK_OK)
    assert video.source_id == file_sha256(carphone)
    with pytest.raises(SourceTooLarge):
        ingest(item, local_store, IngestSettings(allow_private_networks=True, max_bytes=10_000))


def test_http_errors_are_typed(local_store: ClipStore, http_base: str, closed_port: int):
    with pytest.raises(SourceNotFound):
        ingest(SourceItem(f"{http_base}/nope.mp4", "x", {}), local_store, LOOPBACK_OK)
    refused = SourceItem(f"http://127.0.0.1:{closed_port}/v.mp4", "x", {})
    with pytest.raises(DownloadFailed):
        ingest(refused, local_store, LOOPBACK_OK)


def test_private_targets_are_refused_by_default(local_store: ClipStore, http_base: str):
    direct = SourceItem(f"{http_base}/talking/carphone_pristine.mp4", "talking", {})
    with pytest.raises(InvalidSource, match="non-public"):
        ingest(direct, local_store, IngestSettings())
    # "localhost" is trusted by name (an in-cluster mirror, say), but its redirect to another
    # private address is checked again, before any connection to it.
    port = http_base.rsplit(":", 1)[1]
    redirected = SourceItem(
        f"http://localhost:{port}/redirect/talking/carphone_pristine.mp4", "talking", {}
    )
    mirror = IngestSettings(allowed_hosts=["localhost"])
    with pytest.raises(InvalidSource, match="redirect to a non-public address"):
        ingest(redirected, local_store, mirror)
    assert ingest(redirected, local_store, LOOPBACK_OK).info.frame_count == 120


@pytest.mark.parametrize(
    ("settings", "metadata", "filter_name"),
    [
        (IngestSettings(), {"allows_download": False}, "permission"),
        (IngestSettings(min_views=1000), {"view_count": 999}, "views"),
        (IngestSettings(min_short_side=160), {}, "resolution"),
        (IngestSettings(max_duration_s=3.0), {}, "duration"),
    ],
)
def test_metadata_filters(local_store, carphone: Path, settings, metadata, filter_name):
    with pytest.raises(FilteredOut) as caught:
        ingest(SourceItem(str(carphone), "talking", metadata), local_store, settings)
    assert caught.value.context["filter"] == filter_name
    assert not local_store.list("raw/")


@pytest.mark.parametrize(
    "item",
    [
        SourceItem("videos/../../etc/passwd.mp4", "x", {}),
        SourceItem("http://example.org/a/../../b.mp4", "x", {}),
        SourceItem("/tmp/v.mp4", "../../labels", {}),
    ],
)
def test_traversal_is_refused(local_store: ClipStore, item: SourceItem):
    with pytest.raises(InvalidSource):
        ingest(item, local_store, IngestSettings())


def test_frames_over_the_pixel_limit_are_refused_before_decoding(
    local_store: ClipStore, image_bomb: Path, mov_bomb: Path, bikes: Path
):
    # A PNG renamed .mp4 and a real container claiming such frames: FFmpeg would decode one
    # 16000x16000 frame just to open either; the cap leaves their size unknown instead.
    for bomb in (image_bomb, mov_bomb):
        with pytest.raises(FrameTooLarge, match="no frame size found within"):
            ingest(SourceItem(str(bomb), "x"), local_store, IngestSettings())
    # A size the header gives is compared with the limit as it is.
    with pytest.raises(FrameTooLarge, match="640x272 frames") as caught:
        ingest(SourceItem(str(bikes), "x"), local_store, IngestSettings(max_pixels=640 * 271))
    assert caught.value.context == {"width": 640, "height": 272}
    assert not local_store.list("raw/")
    assert ingest(SourceItem(str(bikes), "x"), local_store, IngestSettings()).info.width == 640


@pytest.mark.parametrize("part", ["body", "headers"])
def test_a_dripping_server_cannot_outlast_the_time_limit(
    local_store: ClipStore, drip_base: str, http_base: str, part: str
):
    settings = IngestSettings(allow_private_networks=True, timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(DownloadFailed, match=r"exceeded 2\.0 s"):
        ingest(SourceItem(f"{drip_base}/{part}", "x"), local_store, settings)
    # Every read gets a byte well within any socket timeout; the deadline still holds.
    assert time.monotonic() - started < settings.timeout_s + 1.5
    good = SourceItem(f"{http_base}/talking/carphone_pristine.mp4", "talking")
    assert ingest(good, local_store, settings).info.frame_count == 120
