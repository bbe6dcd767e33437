"""The clip store's MinIO transport against moto's S3 server on 127.0.0.1, curation included."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from services.common.config import StoreSettings
from services.common.errors import IntegrityError, ObjectNotFound, StoreUnavailable
from services.common.logs import JsonFormatter
from services.common.records import ClipRecord
from services.common.store import ClipStore, file_digests
from services.curation.curate import CurateSettings, LocalStages, curate
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


def test_multipart_etag_proves_an_object_intact_without_reading_it(
    s3_settings: StoreSettings, tmp_path: Path, monkeypatch
):
    store = ClipStore.from_settings(s3_settings)
    blob = tmp_path / "big.bin"
    blob.write_bytes(os.urandom(6 * 1024 * 1024))
    ref = store.put_file("checkpoints/run/big.bin", blob)
    digests = file_digests(blob, store.transport.part_size)
    assert (digests.sha256, digests.size) == (ref.sha256, ref.size)
    assert digests.etag == store.transport.stat(ref.key).etag
    assert digests.etag.endswith("-2")
    small = tmp_path / "small.bin"
    small.write_bytes(b"one part")
    store.put_file("checkpoints/run/small.bin", small)
    etag = store.transport.stat("checkpoints/run/small.bin").etag
    assert file_digests(small, store.transport.part_size).etag == etag
    assert etag == hashlib.md5(b"one part").hexdigest()

    def refuse(*args: object) -> None:
        raise AssertionError("an intact object was read or written again")

    monkeypatch.setattr(store.transport, "holds", refuse)
    monkeypatch.setattr(store.transport, "put_file", refuse)
    assert store.put_file(ref.key, blob) == ref
    assert store.drain_repairs() == []


def test_flipped_bytes_are_refused_and_repaired_by_the_next_put(s3_settings: StoreSettings):
    store = ClipStore.from_settings(s3_settings)
    ref = store.put_bytes("clips/s/000000-000010.mp4", b"good bytes")
    assert store.verify(ref.key) == ref
    # Overwrite behind the store's back, keeping the old recorded sum.
    store.transport.client.put_object(
        s3_settings.bucket, ref.key, io.BytesIO(b"bad bytes!"), 10, metadata={"sha256": ref.sha256}
    )
    with pytest.raises(IntegrityError):
        store.get_bytes(ref.key)
    assert store.verify(ref.key) is None
    assert store.put_bytes(ref.key, b"good bytes") == ref
    assert store.drain_repairs() == [ref.key]
    assert store.get_bytes(ref.key) == b"good bytes"
    assert store.verify(ref.key) == ref
    folder = store.prefix_uri("clips/s")
    assert folder == f"s3://{s3_settings.bucket}/clips/s/"
    assert store.key_from_uri(folder) == "clips/s/"
    moved = store.quarantine(ref.key, ClipStore.quarantine_key("d", "clip.mp4"))
    assert store.get_bytes(moved.key) == b"good bytes" and not store.exists(ref.key)


def test_objects_without_sums_are_absent_in_the_layout_and_read_outside(
    s3_settings: StoreSettings, tmp_path: Path
):
    store = ClipStore.from_settings(s3_settings)
    client, bucket = store.transport.client, s3_settings.bucket
    for key in ("meta/s.json", "benchmarks/set/clip.mp4"):
        client.put_object(bucket, key, io.BytesIO(b"{}"), 2)
    assert store.stat("meta/s.json") is None and not store.exists("meta/s.json")
    assert store.verify("meta/s.json") is None
    with pytest.raises(ObjectNotFound):
        store.get_bytes("meta/s.json")
    with pytest.raises(ObjectNotFound), store.open_local("meta/s.json"):
        pass
    assert store.put_json("meta/s.json", {}).sha256 == store.stat("meta/s.json").sha256
    assert store.get_json("meta/s.json") == {}
    assert store.get_bytes("benchmarks/set/clip.mp4") == b"{}"
    assert store.stat("benchmarks/set/clip.mp4").sha256 == ""
    with store.open_local("benchmarks/set/clip.mp4") as path:
        assert path.read_bytes() == b"{}"
    assert store.drain_repairs() == []


def test_a_stopped_endpoint_fails_fast_with_store_unavailable(s3_settings: StoreSettings):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = s3_settings.model_copy(
        update={"endpoint": f"127.0.0.1:{port}", "timeout_s": 1.0, "retries": 1}
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        ClipStore.from_settings(down)
    store = ClipStore.from_settings(down.model_copy(update={"create_bucket": False}))
    with pytest.raises(StoreUnavailable):
        store.get_bytes("clips/s/000000-000010.mp4")
    with pytest.raises(StoreUnavailable):
        store.put_bytes("clips/s/000000-000010.mp4", b"x")
    assert time.monotonic() - started < 10


def test_a_hanging_endpoint_times_out_with_store_unavailable(s3_settings: StoreSettings):
    with socket.socket() as silent:  # accepts connections (kernel backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        hanging = s3_settings.model_copy(
            update={
                "endpoint": f"127.0.0.1:{port}",
                "timeout_s": 0.5,
                "retries": 1,
                "create_bucket": False,
            }
        )
        store = ClipStore.from_settings(hanging)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.stat("clips/s/000000-000010.mp4")
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 5  # two attempts of 0.5 s, not minio's 6 x 5 minutes


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
