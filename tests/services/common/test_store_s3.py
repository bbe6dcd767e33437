"""The clip store's MinIO transport against moto's S3 server on 127.0.0.1, curation included."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from pathlib import Path

import pytest

from services.common.config import StoreSettings
from services.common.errors import IntegrityError, ObjectNotFound
from services.common.logs import JsonFormatter
from services.common.records import ClipRecord
from services.common.store import ClipStore
from services.ingestion.curate import CurateSettings, LocalStages, curate
from services.ingestion.sources import IngestSettings, expand_source


def test_multipart_upload_round_trip_and_presigned_url(s3_settings: StoreSettings, tmp_path):
    store = ClipStore.from_settings(s3_settings)
    blob = tmp_path / "big.bin"
    blob.write_bytes(os.urandom(6 * 1024 * 1024 + 123))  # > multipart_mb=5: two parts
    ref = store.put_file("checkpoints/run/big.bin", blob)
    assert ref.uri == f"s3://{s3_settings.bucket}/checkpoints/run/big.bin"
    # The part size really was 5 MiB: an S3 multipart ETag ends in "-<number of parts>".
    info = store.transport.client.stat_object(s3_settings.bucket, ref.key)
    assert info.etag.endswith("-2")
    assert store.stat(ref.key).sha256 == ref.sha256
    copy = store.download(ref.key, tmp_path / "copy.bin")
    assert copy.read_bytes() == blob.read_bytes()
    with urllib.request.urlopen(store.presigned_url(ref.key), timeout=10) as response:
        assert hashlib.sha256(response.read()).hexdigest() == ref.sha256
    assert store.list("checkpoints/") == [ref.key]
    store.delete(ref.key)
    with pytest.raises(ObjectNotFound):
        store.get_bytes(ref.key)


def test_object_not_matching_its_sha256_is_refused(s3_settings: StoreSettings):
    store = ClipStore.from_settings(s3_settings)
    ref = store.put_bytes("clips/s/000000-000010.mp4", b"good bytes")
    # Overwrite behind the store's back, keeping the old recorded sum.
    import io

    store.transport.client.put_object(
        s3_settings.bucket, ref.key, io.BytesIO(b"bad bytes!"), 10, metadata={"sha256": ref.sha256}
    )
    with pytest.raises(IntegrityError):
        store.get_bytes(ref.key)


def test_secrets_never_reach_repr_or_logs(s3_settings: StoreSettings, caplog):
    secret = s3_settings.secret_key.get_secret_value()
    assert secret not in repr(s3_settings)
    assert secret not in s3_settings.model_dump_json()
    formatter = JsonFormatter("test")
    with caplog.at_level(logging.DEBUG):
        store = ClipStore.from_settings(s3_settings)
        store.put_bytes("state/x.json", b"{}")
        logging.getLogger("test").info("settings %s", s3_settings)
        logging.getLogger("test").info("secret_key=%s", secret)
    text = "\n".join(formatter.format(record) for record in caplog.records)
    assert secret not in text
    assert secret not in store.describe()


def test_curate_into_s3_and_read_clips_back_verified(
    s3_settings: StoreSettings, carphone: Path, tmp_path: Path, monkeypatch
):
    """The MinIO path end to end: sources listed from s3://, clips stored, read back, verified."""
    monkeypatch.setenv("H2A_STORE_ENDPOINT", s3_settings.endpoint)
    monkeypatch.setenv("H2A_STORE_ACCESS_KEY", "h2a-access")
    monkeypatch.setenv("H2A_STORE_SECRET_KEY", s3_settings.secret_key.get_secret_value())
    monkeypatch.setenv("H2A_STORE_REGION", "us-east-1")
    store = ClipStore.from_settings(s3_settings)
    store.put_file("incoming/talking/carphone.mp4", carphone)
    source = f"s3://{s3_settings.bucket}/incoming/"
    assert [(i.location, i.hashtag) for i in expand_source(source)] == [
        (f"s3://{s3_settings.bucket}/incoming/talking/carphone.mp4", "talking")
    ]
    settings = CurateSettings(store=s3_settings, ingest=IngestSettings())
    summary = curate(source, LocalStages(store, settings), store, "s3set", progress=False)
    assert (summary.clips_added, summary.review, summary.rejected) == (1, 0, 0)
    lines = store.get_lines(ClipStore.manifest_key("s3set", "clips.jsonl"))
    record = ClipRecord.from_json(lines[0])
    pretrain = store.get_lines(ClipStore.manifest_key("s3set", "pretrain.csv"))
    assert pretrain == [f"{record.clip.uri} 0 -1"]
    key = store.key_from_uri(record.clip.uri)
    local = store.download(key, tmp_path / "clip.mp4", record.clip.sha256)
    assert hashlib.sha256(local.read_bytes()).hexdigest() == record.clip.sha256
    assert store.exists(ClipStore.manifest_key("s3set", "plots/durations.png"))
