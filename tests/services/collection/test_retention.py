"""Purge by source and by age, provenance, and the ``h2a store`` commands on a real clip store."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from services.collection.retention import provenance, purge_older_than, purge_source
from services.common.config import StoreSettings
from services.common.dataset import Dataset
from services.common.records import ClipRecord, Rejection
from services.common.store import ClipStore, file_sha256

OLD = "2026-01-10T08:00:00+00:00"
NEW = "2026-11-20T08:00:00+00:00"
NOW = datetime(2026, 11, 22, tzinfo=UTC)


def _source(store: ClipStore, video: Path, tag: str, created: str, clips: int) -> dict:
    """Store one source the way the data engine does: raw, meta, clips, records."""
    data = video.read_bytes() + tag.encode()  # distinct bytes, so a distinct source id
    source_id = hashlib.sha256(data).hexdigest()
    location = f"https://www.tiktok.com/@someone/video/{tag}"
    store.put_bytes(ClipStore.raw_key(source_id, ".mp4"), data)
    metadata = {"rule": "noun_substitution", "query": f"hashtag_name IN [{tag}]"}
    metadata["collected_at"] = created
    store.put_json(
        ClipStore.meta_key(source_id),
        {"source_id": source_id, "location": location, "hashtag": tag, "metadata": metadata},
    )
    records = []
    for index in range(clips):
        ref = store.put_file(ClipStore.clip_key(source_id, index * 100, index * 100 + 90), video)
        records.append(
            ClipRecord(
                ref,
                source_id,
                location,
                tag,
                index * 100,
                index * 100 + 90,
                25.0,
                8,
                metadata=metadata,
                created_at=created,
            )
        )
    return {"id": source_id, "location": location, "records": records, "tag": tag}


@pytest.fixture(params=["local", "s3"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    """Retention runs on the embedded folder and on MinIO/S3 (moto on loopback) alike."""
    if request.param == "local":
        return StoreSettings(backend="local", root=tmp_path / "store")
    return request.getfixturevalue("s3_settings")


@pytest.fixture()
def populated(store_settings: StoreSettings, carphone: Path) -> tuple[ClipStore, list[dict]]:
    """Three sources in two datasets, with review and rejection lines, as the engine writes."""
    local_store = ClipStore.from_settings(store_settings)
    sources = [
        _source(local_store, carphone, "piano", OLD, 2),
        _source(local_store, carphone, "tango", NEW, 1),
        _source(local_store, carphone, "archery", NEW, 1),
    ]
    datasets = {"main": sources, "extra": sources[:2]}
    for name, members in datasets.items():
        dataset = Dataset(local_store, name)
        # An earlier run: failed before ingestion (no source id yet, only its location).
        dataset.add(
            [
                Rejection(members[0]["location"], "ingestion", "DOWNLOAD_FAILED", "x",
                          created_at=OLD),
                Rejection("https://elsewhere.example/v.mp4", "ingestion", "TOO_SHORT", "y",
                          created_at=NEW),
            ]
        )  # fmt: skip
        review = [
            # The same video found again under another URL, with too few person frames.
            Rejection(f"{s['location']}?again", "persons", "TOO_FEW_PERSON_FRAMES", "2/10",
                      s["id"], {"frame_indices": [0, 5], "scores": [0.1, 0.9]},
                      created_at=s["records"][0].created_at)
            for s in members
        ]  # fmt: skip
        dataset.add([*(r for s in members for r in s["records"]), *review])
        dataset.publish()
    state = [{"url": s["location"], "hashtag": s["tag"]} for s in sources]
    local_store.put_lines(
        ClipStore.state_key("collect/plan/all.jsonl"), (json.dumps(line) for line in state)
    )
    return local_store, sources


def _everything(store: ClipStore) -> str:
    """Every key and every dataset/state text object of the store, as one text."""
    keys = store.list()
    texts = [
        store.get_text(k)
        for k in keys
        if k.startswith(("manifests/", "state/")) and not k.endswith((".png", ".jpg"))
    ]
    return "\n".join(keys + texts)


_LISTS = ("pretrain.csv", "train.csv", "clips.jsonl", "review.jsonl", "rejections.jsonl")


def test_purge_removes_a_source_everywhere_and_nothing_else(populated):
    store, (piano, tango, archery) = populated
    before = {
        key: store.get_lines(key)
        for name in ("main", "extra")
        for key in (ClipStore.manifest_key(name, view) for view in _LISTS)
    }
    other_clips = [r.clip for s in (tango, archery) for r in s["records"]]

    assert purge_source(store, piano["id"][:8]).empty  # an id prefix matches nothing
    report = purge_source(store, piano["id"])

    text = _everything(store)
    assert piano["id"] not in text and piano["location"] not in text
    assert not [k for k in store.list() if piano["id"] in k]
    assert len(report.deleted) == 4  # raw, meta, two clips
    assert report.records == {"main": 2, "extra": 2}  # its clips' input and its review input
    assert report.lines[ClipStore.state_key("collect/plan/all.jsonl")] == 1
    for ref in other_clips:  # the other clips are intact, bytes verified on read
        with store.open_local(ref) as path:
            assert file_sha256(path) == ref.sha256
    for key, lines in before.items():
        remaining = store.get_lines(key)
        assert remaining == [line for line in lines if line in remaining]
        assert len(remaining) == len([ln for ln in lines if piano["id"] not in ln
                                      and piano["location"] not in ln])  # fmt: skip
    assert store.get_json(ClipStore.manifest_key("main", "labels.json"))  # kept
    assert purge_source(store, piano["id"]).empty  # a second purge finds nothing


def test_retention_by_age(populated):
    store, (piano, tango, archery) = populated
    reports = purge_older_than(store, days=30, now=NOW)
    assert [r.source_id for r in reports] == [piano["id"]]
    assert not store.exists(ClipStore.meta_key(piano["id"]))
    assert store.exists(ClipStore.meta_key(tango["id"]))
    assert len(provenance(store, source_id=tango["id"])) == 2  # both datasets
    everything = purge_older_than(store, days=0, now=NOW)
    assert {r.source_id for r in everything} == {tango["id"], archery["id"]}
    assert store.list("clips/") == [] and store.list("raw/") == []


def test_provenance_by_source_and_clip(populated):
    store, (piano, *_) = populated
    found = provenance(store, source_id=piano["id"])
    assert [dataset for dataset, _ in found] == ["extra", "extra", "main", "main"]  # sorted
    clip = piano["records"][1].clip
    found = provenance(store, clip_key=clip.uri)
    assert [dataset for dataset, _ in found] == ["extra", "main"]
    record = found[0][1]
    assert record.clip == clip and record.metadata["rule"] == "noun_substitution"
    assert provenance(store, clip_key=clip.key) == found


def test_store_commands(populated, store_settings, monkeypatch):
    store, (piano, tango, _) = populated
    for name, value in store_settings.model_dump(exclude_none=True).items():
        secret = getattr(value, "get_secret_value", None)
        monkeypatch.setenv(f"H2A_STORE_{name.upper()}", str(secret() if secret else value))
    monkeypatch.setenv("COLUMNS", "400")
    runner = CliRunner()
    shown = runner.invoke(main, ["store", "show", "--source", tango["id"]])
    assert shown.exit_code == 0, shown.output
    for text in ("#tango", "noun_substitution", "hashtag_name IN [tango]", NEW, tango["id"][:12]):
        assert text in shown.output
    purged = runner.invoke(main, ["store", "purge", "--source", tango["id"]])
    assert purged.exit_code == 0, purged.output
    assert f"deleted {ClipStore.meta_key(tango['id'])}" in purged.output
    assert "record(s) from dataset main" in purged.output
    assert runner.invoke(main, ["store", "show", "--source", tango["id"]]).exit_code == 1
    aged = runner.invoke(main, ["store", "retention", "--older-than", "30"])
    assert aged.exit_code == 0, aged.output
    assert piano["id"] in aged.output and not store.list(f"clips/{piano['id']}/")
