"""The clip store on the local backend: atomic writes, key validation, integrity on read,
crash-safe sidecars, self-repair and cleanup of what crashed runs left behind."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from services.common.config import StoreSettings
from services.common.errors import IntegrityError, InvalidKey, ObjectNotFound
from services.common.store import ClipStore, LocalTransport, file_sha256


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
    assert ClipStore.clip_prefix("ab12") == "clips/ab12/"
    assert ClipStore.dataset_prefix("d") == "manifests/d/"
    assert ClipStore.part_key("d", "000007") == "manifests/d/parts/000007.jsonl"
    assert ClipStore.quarantine_key("d", "x.mp4") == "manifests/d/quarantine/x.mp4"
    assert ClipStore.state_prefix("collect") == "state/collect/"
    assert ClipStore.part_prefix("d") == "manifests/d/parts/"
    assert ClipStore.quarantine_prefix("d") == "manifests/d/quarantine/"
    assert ClipStore.dataset_of("manifests/d/") == ClipStore.dataset_of("manifests/d") == "d"
    assert ClipStore.dataset_of("manifests/d/parts/") is None
    assert ClipStore.dataset_of("benchmarks/d/") is None
    for build, args in [
        (ClipStore.clip_prefix, ("a/b",)),
        (ClipStore.clip_prefix, ("..",)),
        (ClipStore.dataset_prefix, ("d/e",)),
        (ClipStore.part_key, ("d", "x/y")),
        (ClipStore.quarantine_key, ("d", "../x")),
        (ClipStore.state_prefix, ("",)),
    ]:
        with pytest.raises(InvalidKey):
            build(*args)


def test_layout_listings(local_store: ClipStore):
    source, other = "ab12", "ab123"  # ``other`` has ``source`` as a prefix
    for sid in (source, other):
        local_store.put_bytes(ClipStore.raw_key(sid), b"raw")
        local_store.put_json(ClipStore.meta_key(sid), {})
        local_store.put_bytes(ClipStore.clip_key(sid, 0, 10), b"clip")
    local_store.put_bytes(ClipStore.clip_key(source, 10, 20), b"clip")
    local_store.put_lines(ClipStore.part_key("d", "b"), ["{}"])
    local_store.put_lines(ClipStore.part_key("d", "a"), ["{}"])
    local_store.put_bytes(ClipStore.quarantine_key("d", "c.jsonl"), b"x")
    local_store.put_bytes(ClipStore.manifest_key("e", "clips.jsonl"), b"")
    assert local_store.source_objects(source) == [
        "clips/ab12/000000-000010.mp4",
        "clips/ab12/000010-000020.mp4",
        "meta/ab12.json",
        "raw/ab12.mp4",
    ]
    assert local_store.source_objects("cd34") == []
    assert local_store.meta_source_ids() == [source, other]
    assert local_store.clip_source_ids() == [source, other]
    assert local_store.dataset_names() == ["d", "e"]
    assert local_store.part_keys("d") == [ClipStore.part_key("d", n) for n in ("a", "b")]
    assert local_store.part_keys("e") == []


def test_missing_sidecar_reads_as_absent_and_reput_writes_it(local_store: ClipStore):
    root = local_store.transport.root
    ref = local_store.put_bytes("clips/s/000000-000010.mp4", b"clip bytes")
    (root / "_sha256" / ref.key).unlink()
    # A put killed between the object and its sidecar leaves just this: a new object file.
    (root / "meta").mkdir()
    (root / "meta/s.json").write_bytes(b"{}")
    for key in (ref.key, "meta/s.json"):
        assert local_store.stat(key) is None and not local_store.exists(key)
        assert local_store.verify(key) is None
        assert local_store.transport.local_path(key) is None
        with pytest.raises(ObjectNotFound):
            local_store.get_bytes(key)
        with pytest.raises(ObjectNotFound), local_store.open_local(key):
            pass
    assert local_store.list("clips/") == [] and local_store.list("meta/") == []
    assert local_store.get_lines("meta/s.json") == []
    assert local_store.put_bytes(ref.key, b"clip bytes") == ref
    assert local_store.put_json("meta/s.json", {}).key == "meta/s.json"
    assert (root / "_sha256" / ref.key).read_text() == ref.sha256
    assert local_store.get_bytes(ref.key) == b"clip bytes"
    assert local_store.get_json("meta/s.json") == {}
    assert local_store.drain_repairs() == []  # a missing object is written, not repaired


def test_foreign_objects_without_sums_read_as_they_are(local_store: ClipStore):
    root = local_store.transport.root
    (root / "benchmarks/set").mkdir(parents=True)
    (root / "benchmarks/set/clip.mp4").write_bytes(b"uploaded by hand")
    key = "benchmarks/set/clip.mp4"
    assert local_store.list("benchmarks/") == [key]
    assert local_store.stat(key).sha256 == "" and local_store.stat(key).size == 16
    assert local_store.get_bytes(key) == b"uploaded by hand"
    with local_store.open_local(key) as path:
        assert path == root / key
    assert local_store.verify(key) is None  # nothing to verify against
    sha256 = file_sha256(root / key)
    assert local_store.verify(key, sha256).sha256 == sha256
    with pytest.raises(IntegrityError):
        local_store.get_bytes(key, "0" * 64)


def test_flipped_bytes_are_detected_and_repaired_by_the_next_put(
    local_store: ClipStore, tmp_path: Path
):
    original = tmp_path / "clip.mp4"
    original.write_bytes(b"original clip bytes")
    ref = local_store.put_file("clips/s/000000-000010.mp4", original)
    assert local_store.verify(ref.key) == ref
    assert local_store.verify(ref.key, ref.sha256) == ref
    assert local_store.verify(ref.key, "0" * 64) is None
    stored = local_store.transport.root / ref.key
    stored.write_bytes(b"flipped clip bytes!")
    assert local_store.stat(ref.key).sha256 == ref.sha256  # the sidecar still vouches for it
    assert local_store.verify(ref.key) is None
    with pytest.raises(IntegrityError):
        local_store.get_bytes(ref.key)
    with pytest.raises(IntegrityError):
        local_store.download(ref.key, tmp_path / "copy.mp4")
    assert not (tmp_path / "copy.mp4").exists()
    assert local_store.repairs == ()
    assert local_store.put_file(ref.key, original) == ref
    assert local_store.repairs == (ref.key,)
    assert local_store.drain_repairs() == [ref.key]
    assert local_store.drain_repairs() == []
    assert local_store.get_bytes(ref.key) == b"original clip bytes"
    mtime = stored.stat().st_mtime_ns
    local_store.put_file(ref.key, original)  # intact now: left alone, nothing to report
    assert stored.stat().st_mtime_ns == mtime and local_store.drain_repairs() == []


def _put_many(root: str, key: str, fill: bytes, count: int) -> None:
    """One of two processes racing on ``key``; every read must verify."""
    store = ClipStore.from_settings(StoreSettings(backend="local", root=Path(root)))
    for index in range(count):
        store.put_bytes(key, fill * (1000 + 7 * index))
        data = store.get_bytes(key)  # raises IntegrityError if it paired bytes with a wrong sum
        assert set(data) in ({ord("a")}, {ord("b")})


def test_two_processes_writing_one_key_leave_a_matching_pair(local_store: ClipStore):
    key = "manifests/race/shared.bin"
    root = str(local_store.transport.root)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_put_many, args=(root, key, fill, 50)) for fill in (b"a", b"b")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    path = local_store.transport.root / key
    assert (local_store.transport.root / "_sha256" / key).read_text() == file_sha256(path)
    assert local_store.verify(key) is not None
    assert len(set(path.read_bytes())) == 1


def test_a_new_transport_cleans_what_dead_runs_left(tmp_path: Path):
    root = tmp_path / "store"
    scratch = root / "_tmp" / "h2a-scratch"
    dead = scratch / f"999999-{'f' * 32}"  # a process folder without lock holder or lock file
    dead.mkdir(parents=True)
    (dead / "object").write_bytes(b"half a clip")
    old_part, new_part = root / "_tmp" / "old.part", root / "_tmp" / "new.part"
    old_part.write_bytes(b"x")
    new_part.write_bytes(b"y")
    hour_ago = time.time() - 3600
    os.utime(old_part, (hour_ago, hour_ago))
    LocalTransport(root)
    assert not dead.exists() and not old_part.exists()
    assert new_part.exists()  # may belong to an older writer still running


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
    leftovers = (local_store.transport.root / "_tmp").rglob("*")
    assert [path.name for path in leftovers if path.is_file()] == [".lock"]
    assert local_store.list("manifests/") == [key]


def test_uri_and_key_from_uri_are_inverse(local_store: ClipStore):
    ref = local_store.put_bytes("clips/s/000000-000010.mp4", b"x")
    assert ref.uri.startswith("file://")
    assert local_store.key_from_uri(ref.uri) == ref.key
    with pytest.raises(InvalidKey):
        local_store.key_from_uri("s3://elsewhere/clips/s/000000-000010.mp4")
    folder = local_store.prefix_uri("manifests/d")
    assert folder == local_store.prefix_uri("manifests/d/")
    assert folder.startswith("file://") and folder.endswith("/manifests/d/")
    assert local_store.key_from_uri(folder) == "manifests/d/"
    with pytest.raises(InvalidKey):
        local_store.key_from_uri(f"{folder}/")


def test_quarantine_moves_the_bytes_as_they_are(local_store: ClipStore):
    ref = local_store.put_bytes(ClipStore.part_key("d", "p1"), b"{}\n")
    (local_store.transport.root / ref.key).write_bytes(b"{corrupt\n")
    dest = ClipStore.quarantine_key("d", "p1.jsonl")
    moved = local_store.quarantine(ref.key, dest)
    assert not local_store.exists(ref.key) and local_store.part_keys("d") == []
    assert local_store.get_bytes(dest) == b"{corrupt\n"  # its real sum: readable evidence
    assert local_store.verify(dest) == moved
    with pytest.raises(ObjectNotFound):
        local_store.quarantine(ref.key, dest)
