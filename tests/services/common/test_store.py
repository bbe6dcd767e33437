"""The clip store on the local backend: atomic writes, key validation, integrity on read."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.common.errors import IntegrityError, InvalidKey, ObjectNotFound
from services.common.store import ClipStore, file_sha256


def test_round_trip_records_sha256_and_reput_is_a_no_op(local_store: ClipStore, tmp_path: Path):
    ref = local_store.put_bytes("manifests/d/a.txt", b"hello\n")
    assert ref.sha256 == file_sha256(local_store.transport.root / "manifests/d/a.txt")
    assert local_store.get_bytes("manifests/d/a.txt") == b"hello\n"
    assert local_store.stat("manifests/d/a.txt") == ref
    mtime = (local_store.transport.root / "manifests/d/a.txt").stat().st_mtime_ns
    assert local_store.put_bytes("manifests/d/a.txt", b"hello\n") == ref
    assert (local_store.transport.root / "manifests/d/a.txt").stat().st_mtime_ns == mtime
    assert local_store.get_lines("manifests/d/missing.jsonl") == []


@pytest.mark.parametrize(
    "key", ["", "../etc/passwd", "clips/../../x", "/abs/key", ".hidden", "a//b", "a/./b", "a b"]
)
def test_invalid_keys_are_refused(local_store: ClipStore, key: str):
    with pytest.raises(InvalidKey):
        local_store.put_bytes(key, b"x")


def test_layout_keys_validate_their_parts():
    assert ClipStore.clip_key("ab12", 3, 40) == "clips/ab12/000003-000040.mp4"
    assert ClipStore.raw_key("ab12", ".MP4") == "raw/ab12.mp4"
    assert ClipStore.raw_key("ab12", "/../x") == "raw/ab12.bin"
    with pytest.raises(InvalidKey):
        ClipStore.manifest_key("../other", "clips.jsonl")


def test_corrupted_object_raises_integrity_error(local_store: ClipStore, tmp_path: Path):
    ref = local_store.put_bytes("clips/s/000000-000010.mp4", b"original bytes")
    (local_store.transport.root / ref.key).write_bytes(b"flipped bytes!")
    with pytest.raises(IntegrityError):
        local_store.get_bytes(ref.key)
    with pytest.raises(IntegrityError), local_store.open_local(ref):
        pass
    with pytest.raises(ObjectNotFound):
        local_store.get_bytes("clips/s/none.mp4")


def test_concurrent_writers_never_expose_a_partial_object(local_store: ClipStore):
    """Readers racing two writers of different sizes only ever see one whole version."""
    versions = {b"a" * 3_000_000, b"b" * 1_000_000}
    key = "manifests/race/blob"
    local_store.put_bytes(key, b"a" * 3_000_000)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        path = local_store.transport.root / key
        while not stop.is_set():
            seen.add(len(path.read_bytes()))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(5):
        for data in versions:
            local_store.put_bytes(key, data)
    stop.set()
    reader.join()
    assert seen <= {3_000_000, 1_000_000}
    assert not list((local_store.transport.root / "_tmp").iterdir())
    assert local_store.list("manifests/") == [key]


def test_uri_and_key_from_uri_are_inverse(local_store: ClipStore):
    ref = local_store.put_bytes("clips/s/000000-000010.mp4", b"x")
    assert ref.uri.startswith("file://")
    assert local_store.key_from_uri(ref.uri) == ref.key
    with pytest.raises(InvalidKey):
        local_store.key_from_uri("s3://elsewhere/clips/s/000000-000010.mp4")
