"""One bad manifest row is one rejection: every row is listed, only the bad ones fail ingest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.common.errors import H2AError, InvalidSource, SourceNotFound
from services.common.store import ClipStore, file_sha256
from services.ingestion.sources import IngestSettings, SourceItem, expand_source, ingest

BOUNDED = 300
"""Longest error detail a rejection record may carry, whatever the row held."""


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rejected(item: SourceItem, store: ClipStore, error: type[H2AError] = InvalidSource) -> str:
    with pytest.raises(error) as caught:
        ingest(item, store, IngestSettings())
    assert len(caught.value.detail) < BOUNDED, caught.value.detail
    return caught.value.detail


def test_bad_jsonl_rows_are_listed_and_rejected_one_by_one(
    tmp_path: Path, local_store: ClipStore, carphone: Path, bikes: Path
):
    good = {"url": str(carphone), "hashtag": "#talking ", "view_count": 3}
    manifest = _write_jsonl(
        tmp_path / "m.jsonl",
        [
            json.dumps(good),
            json.dumps({"url": "/" + "a" * 4999, "hashtag": "long"}),
            "{not json",
            json.dumps([good]),
            json.dumps("a string"),
            json.dumps({"url": str(carphone), "hashtag": "x" * 20_000}),
            "",  # a blank line is no row
            json.dumps({"url": str(carphone), "hashtag": "new\nline"}),
            json.dumps({"hashtag": "nourl"}),
            json.dumps({"url": str(bikes), "hashtag": "cycling"}),
        ],
    )
    items = expand_source(str(manifest))
    assert len(items) == 9
    first, *bad, last = items
    # Bad rows are named by their manifest line, unique and short, and carry nothing else.
    assert [item.location for item in bad] == [f"{manifest}:{n}" for n in (2, 3, 4, 5, 6, 8, 9)]
    assert all(item.problem and not item.hashtag and not item.metadata for item in bad)
    details = [_rejected(item, local_store) for item in bad]
    assert "5000 characters" in details[0]
    assert "not JSON" in details[1]
    assert "JSON object" in details[2] and "JSON object" in details[3]
    assert "longer than 100" in details[4]
    assert "'new\\nline'" in details[5]  # escaped: a newline never reaches a label
    assert "no location" in details[6]
    # The good rows around them ingest as usual, hashtags normalised.
    assert first.hashtag == "talking" and first.metadata == {"view_count": 3}
    for item, video in ((first, carphone), (last, bikes)):
        stored = ingest(item, local_store, IngestSettings())
        assert stored.source_id == file_sha256(video)
        assert local_store.get_bytes(stored.raw.key) == video.read_bytes()
    assert len(local_store.list("raw/")) == 2


def test_undecodable_and_deeply_nested_lines_are_bad_rows(tmp_path: Path, carphone: Path):
    manifest = tmp_path / "m.jsonl"
    good = json.dumps({"url": str(carphone), "hashtag": "talking"}).encode()
    manifest.write_bytes(
        b'{"url": "a.mp4", "hashtag": "caf\xe9"}\n' + b"[" * 100_000 + b"\n" + good + b"\n"
    )
    undecodable, nested, row = expand_source(str(manifest))
    assert "not UTF-8" in undecodable.problem and "nested too deeply" in nested.problem
    assert row == SourceItem(str(carphone), "talking", {})


def test_csv_with_bom_and_bad_rows(tmp_path: Path, local_store: ClipStore, carphone: Path):
    manifest = tmp_path / "m.csv"
    text = (
        "url,hashtag,view_count\r\n"
        f"{carphone},talking,5\r\n"
        f'{carphone},"two\nlines",1\r\n'
        f"{carphone},talking,1,extra\r\n"
        "nowhere.mp4,missing\r\n"
    )
    manifest.write_bytes(b"\xef\xbb\xbf" + text.encode() + b"caf\xe9.mp4,cafe\r\n")
    good, newline, extra, missing, undecodable = expand_source(str(manifest))
    assert good == SourceItem(str(carphone), "talking", {"view_count": 5})
    # A quoted field spans lines 3-4: the row is line 3, the next ones 5, 6 and 7.
    assert newline.location == f"{manifest}:3" and "contains whitespace" in newline.problem
    assert extra.location == f"{manifest}:5" and "4 fields" in extra.problem
    assert missing.location == str(tmp_path / "nowhere.mp4") and not missing.problem
    assert undecodable.location == f"{manifest}:7" and "not UTF-8" in undecodable.problem
    assert ingest(good, local_store, IngestSettings()).source_id == file_sha256(carphone)
    _rejected(newline, local_store)
    _rejected(missing, local_store, SourceNotFound)


def test_undecodable_csv_header_fails_the_manifest(tmp_path: Path):
    (tmp_path / "m.csv").write_bytes(b"url,hasht\xe4g\n/a.mp4,x\n")
    with pytest.raises(InvalidSource, match="header"):
        expand_source(str(tmp_path / "m.csv"))


@pytest.mark.parametrize(
    "hashtag",
    ["", "  ", "#", "new\nline", "tab\there", "nul\x00", "a b", "x" * 101, "a/b", "a\\b", ".."],
)
def test_unusable_hashtags_are_refused_briefly(local_store: ClipStore, carphone: Path, hashtag):
    detail = _rejected(SourceItem(str(carphone), hashtag), local_store)
    assert "\n" not in detail and "\x00" not in detail


def test_hashtags_are_normalised(local_store: ClipStore, carphone: Path):
    stored = ingest(SourceItem(str(carphone), " #talking\n"), local_store, IngestSettings())
    assert stored.item.hashtag == "talking"
    assert local_store.get_json(stored.meta.key)["hashtag"] == "talking"
    assert [item.hashtag for item in expand_source(str(carphone), hashtag="#tv")] == ["tv"]
    with pytest.raises(InvalidSource, match="whitespace"):
        expand_source(str(carphone), hashtag="two words")


@pytest.mark.parametrize(
    "location",
    [
        "/" + "a" * 5000 + ".mp4",  # over the length limit
        "/tmp/" + "a" * 300 + ".mp4",  # a name over NAME_MAX: the system refuses it
        "http://[::1/v.mp4",
        "http://example.org:99999/v.mp4",
        "http://" + "a" * 70 + ".example/v.mp4",
        "/tmp/a\nb.mp4",
    ],
)
def test_unusable_locations_are_typed_and_brief(local_store: ClipStore, location: str):
    _rejected(SourceItem(location, "x"), local_store)


def test_long_source_paths_fail_typed(tmp_path: Path):
    for source in (str(tmp_path / ("a" * 300)), str(tmp_path / ("a" * 300 + ".jsonl"))):
        with pytest.raises(InvalidSource, match="too long") as caught:
            expand_source(source)
        assert len(caught.value.detail) < BOUNDED


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_files_are_typed(tmp_path: Path, local_store: ClipStore, carphone: Path):
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(carphone.read_bytes())
    locked.chmod(0)
    manifest = tmp_path / "m.jsonl"
    _write_jsonl(manifest, [json.dumps({"url": "locked.mp4", "hashtag": "x"})])
    manifest.chmod(0)
    try:
        with pytest.raises(InvalidSource, match="cannot read source"):
            expand_source(str(manifest))
        assert "Permission denied" in _rejected(SourceItem(str(locked), "x"), local_store)
    finally:
        manifest.chmod(0o600)
        locked.chmod(0o600)
