"""The dataset owner: commits as parts, latest outcome wins, compaction, purge, views, and a
crash at every store operation of a commit, a compaction and a publish."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from services.common.config import StoreSettings
from services.common.dataset import REVIEW_REASON, VIEW_NAMES, Dataset, training_lists
from services.common.errors import ConfigError
from services.common.records import ClipRecord, FailedAttempt, ObjectRef, Rejection
from services.common.store import ClipStore


def clip(source: str, hashtag: str = "dance", start: int = 0, source_id: str = "") -> ClipRecord:
    source_id = source_id or f"id-{abs(hash(source)) % 10**12:012d}"
    key = ClipStore.clip_key(source_id, start, start + 100)
    return ClipRecord(
        ObjectRef(key, f"file:///store/{key}", "0" * 64, 10),
        source_id,
        source,
        hashtag,
        start,
        start + 100,
        25.0,
        8,
    )


def rejection(source: str, reason: str = "UNREADABLE_VIDEO") -> Rejection:
    return Rejection(source, "ingestion", reason, "bad bytes")


def attempt(source: str) -> FailedAttempt:
    return FailedAttempt(source, "ingestion", "STORE_UNAVAILABLE", "store down")


def test_commits_fold_into_lists_and_labels(local_store: ClipStore):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("a", "dance"), clip("b", "piano"), rejection("c")])
    dataset.add([clip("d", "archery"), Rejection("e", "persons", REVIEW_REASON, "1 of 10")])
    snapshot = dataset.snapshot()
    assert [c.source for c in snapshot.clips] == ["a", "b", "d"]
    assert [r.source for r in snapshot.review] == ["e"]
    assert [r.source for r in snapshot.rejections] == ["c"]
    # Labels in the order hashtags first appeared (sorted within one commit), never moved.
    assert snapshot.labels == {"dance": 0, "piano": 1, "archery": 2}
    assert snapshot.train_lines()[2].endswith(" 2")
    assert all(line.endswith(" 0 -1") for line in snapshot.pretrain_lines())
    assert len(snapshot.parts) == 2 and snapshot.inputs == 5


def test_latest_outcome_wins_and_never_coexists(local_store: ClipStore):
    dataset = Dataset(local_store, "d")
    dataset.add([rejection("a"), clip("b")])
    dataset.add([clip("a"), rejection("b", "TOO_SHORT")])
    snapshot = dataset.snapshot()
    assert [c.source for c in snapshot.clips] == ["a"]
    assert [(r.source, r.reason) for r in snapshot.rejections] == [("b", "TOO_SHORT")]


def test_failed_attempts_never_replace_an_outcome(local_store: ClipStore):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("a"), attempt("b")])
    dataset.add([attempt("a"), attempt("b")])
    snapshot = dataset.snapshot()
    assert [c.source for c in snapshot.clips] == ["a"]  # still the clip
    assert [p.source for p in snapshot.pending] == ["b"]  # no outcome yet: pending
    assert snapshot.attempts == {"a": 1, "b": 2}
    dataset.add([clip("b")])
    snapshot = dataset.snapshot()
    assert not snapshot.pending and "b" not in snapshot.attempts


def test_clips_of_one_input_in_one_commit_are_one_outcome(local_store: ClipStore):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("a", start=0), clip("a", start=200)])
    assert len(dataset.snapshot().clips) == 2
    dataset.add([rejection("a")])  # a newer outcome replaces both
    assert not dataset.snapshot().clips


def test_one_video_found_twice_is_listed_once(local_store: ClipStore):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("https://x/1", source_id="same"), clip("https://y/2", source_id="same")])
    assert len(dataset.snapshot().clips) == 1


def test_concurrent_writers_lose_nothing(local_store: ClipStore):
    dataset = Dataset(local_store, "d")

    def write(worker: int) -> None:
        for batch in range(20):
            dataset.add([clip(f"w{worker}-{batch}-{i}", f"tag{worker}") for i in range(5)])

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = dataset.snapshot()
    assert len(snapshot.clips) == 6 * 20 * 5
    assert len({c.source for c in snapshot.clips}) == 600
    assert sorted(snapshot.labels.values()) == list(range(6))


def test_compaction_keeps_the_state(local_store: ClipStore):
    dataset = Dataset(local_store, "d")
    for index in range(5):
        dataset.add([clip(f"c{index}", f"t{index % 2}"), rejection(f"r{index}"), attempt("p")])
    dataset.add([clip("c0", "t1")])  # replaces c0's first outcome
    before = dataset.snapshot()
    result = dataset.compact()
    after = dataset.snapshot()
    assert len(result.replaced) == 6 and after.parts == (Path(result.part).stem,)
    assert after.clips == before.clips and after.rejections == before.rejections
    assert after.labels == before.labels and after.attempts == before.attempts == {"p": 5}
    # Nothing superseded is kept: one line per label, input outcome and pending attempt.
    assert len(after.lines) == 2 + 5 + 5 + 5


def test_a_reader_starts_over_when_compaction_removes_a_part(local_store: ClipStore, monkeypatch):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("a")])
    dataset.add([clip("b")])
    stale = dataset.part_names()
    dataset.compact()
    listings = iter([stale])
    real = Dataset.part_names
    monkeypatch.setattr(Dataset, "part_names", lambda self: next(listings, None) or real(self))
    assert [c.source for c in dataset.snapshot().clips] == ["a", "b"]


def test_purge_removes_records_for_good_and_keeps_labels(local_store: ClipStore, monkeypatch):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("gone", "solo"), clip("kept", "dance")])
    dataset.add([attempt("gone")])
    removed = dataset.purge(lambda outcome: outcome.source == "gone")
    assert removed == ("gone",)
    snapshot = dataset.snapshot()
    assert [c.source for c in snapshot.clips] == ["kept"] and not snapshot.attempts
    assert snapshot.labels == {"dance": 0, "solo": 1}  # a trained head's classes stay
    stored = "".join(local_store.get_text(key) for key in local_store.part_keys("d"))
    assert "gone" not in stored  # tombstones name inputs by hash only
    # A commit that raced the purge with an older timestamp stays hidden by the tombstone.
    monkeypatch.setattr("time.time_ns", lambda: 1)
    dataset.add([clip("gone", "solo")])
    monkeypatch.undo()
    assert [c.source for c in dataset.snapshot().clips] == ["kept"]
    # Re-curated later, the source is back.
    dataset.add([clip("gone", "solo")])
    assert {c.source for c in dataset.snapshot().clips} == {"kept", "gone"}


def test_publish_writes_every_view_and_follows_new_commits(local_store: ClipStore):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("a", "dance")])
    calls = []

    def commit_meanwhile(snapshot):
        calls.append(snapshot.version)
        if len(calls) == 1:  # another run commits while the first publish writes
            dataset.add([clip("b", "piano")])

    published = dataset.publish(also=commit_meanwhile)
    assert len(calls) == 2 and len(published.clips) == 2
    assert [local_store.exists(dataset.view_key(name)) for name in VIEW_NAMES] == [True] * len(
        VIEW_NAMES
    )
    assert len(local_store.get_lines(dataset.view_key("train.csv"))) == 2
    assert dataset.published()["version"] == published.version


def test_a_corrupted_part_is_quarantined_and_a_corrupted_view_repaired(
    local_store: ClipStore, tmp_path: Path
):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("a")])
    bad = dataset.add([clip("b")])
    dataset.publish()
    root = Path(local_store.describe())
    view = root / dataset.view_key("pretrain.csv")
    view.write_bytes(view.read_bytes()[:-3] + b"xx\n")
    local_store.drain_repairs()
    dataset.publish()  # the same state: the view's recorded sum is right, its bytes are not
    assert local_store.drain_repairs() == [dataset.view_key("pretrain.csv")]
    assert len(local_store.get_lines(dataset.view_key("pretrain.csv"))) == 2
    (root / bad).write_bytes(b"flipped")
    published = dataset.publish()
    assert [c.source for c in published.clips] == ["a"]
    assert local_store.list(local_store.quarantine_prefix("d")) and not local_store.exists(bad)
    assert local_store.drain_repairs() == [bad]


def test_training_lists_of_a_dataset_and_of_a_folder(local_store: ClipStore, tmp_path: Path):
    dataset = Dataset(local_store, "d")
    dataset.add([clip("a")])
    prefix = local_store.dataset_prefix("d")
    with pytest.raises(ConfigError, match="h2a dataset publish d"):
        training_lists(prefix, "pretrain", local_store)
    dataset.publish()
    lists = training_lists(dataset.folder_uri(), "pretrain", local_store)
    assert lists == {
        "train": dataset.view_uri("pretrain.csv"),
        "labels": dataset.view_uri("labels.json"),
        "records": dataset.view_uri("clips.jsonl"),
    }
    assert training_lists(prefix, "finetune", local_store)["train"] == dataset.view_uri("train.csv")
    (tmp_path / "bench").mkdir()
    for name in ("train.csv", "val.csv", "test.csv", "classInd.txt"):
        (tmp_path / "bench" / name).write_text("x 0\n")
    local = training_lists(str(tmp_path / "bench"), "finetune", local_store)
    assert sorted(local) == ["labels", "test", "train", "val"]
    assert local["labels"].endswith("classInd.txt")


class _Crash(BaseException):
    """A process dying at one store operation (not an Exception: nothing may catch it)."""


class _CrashingTransport:
    """Forwards to a transport and dies at the ``at``-th write or delete."""

    def __init__(self, inner, at: int) -> None:
        self.inner, self.at, self.count = inner, at, 0

    def __getattr__(self, name: str):
        method = getattr(self.inner, name)
        if name not in ("put_file", "delete"):
            return method

        def call(*args, **kwargs):
            self.count += 1
            if self.count == self.at:
                raise _Crash
            return method(*args, **kwargs)

        return call


def _seeded(root: Path) -> ClipStore:
    store = ClipStore.from_settings(StoreSettings(backend="local", root=root))
    dataset = Dataset(store, "d")
    dataset.add([clip(f"old{i}", f"t{i % 3}") for i in range(6)])
    dataset.add([rejection("old0")])
    dataset.add([attempt("p")])
    dataset.publish()
    return store


def _operations(dataset: Dataset) -> None:
    dataset.add([clip("new", "fresh"), rejection("old1")])
    dataset.compact()
    dataset.purge(lambda outcome: outcome.source == "old2")
    dataset.publish()


def test_a_crash_at_any_store_operation_loses_nothing(tmp_path: Path):
    seed = tmp_path / "seed"
    _seeded(seed)
    shutil.copytree(seed, tmp_path / "count")
    counting = _CrashingTransport(
        ClipStore.from_settings(StoreSettings(root=tmp_path / "count")).transport, 0
    )
    _operations(Dataset(ClipStore(counting), "d"))
    total = counting.count
    assert total > 10
    for at in range(1, total + 1):
        root = tmp_path / f"crash{at}"
        shutil.copytree(seed, root)
        store = ClipStore.from_settings(StoreSettings(backend="local", root=root))
        with pytest.raises(_Crash):
            _operations(Dataset(ClipStore(_CrashingTransport(store.transport, at)), "d"))
        # The next run repeats the work and completes it.
        _operations(Dataset(store, "d"))
        snapshot = Dataset(store, "d").snapshot()
        sources = sorted(c.source for c in snapshot.clips)
        assert sources == ["new", "old3", "old4", "old5"], at
        assert [r.source for r in snapshot.rejections] == ["old0", "old1"], at
        assert [p.source for p in snapshot.pending] == ["p"], at
        assert snapshot.labels["fresh"] == 3, at
        published = Dataset(store, "d").published()
        assert published is not None and published["version"] == snapshot.version, at
        assert len(store.get_lines(ClipStore.manifest_key("d", "pretrain.csv"))) == 4, at


def test_a_dataset_from_before_parts_is_adopted_not_emptied(local_store: ClipStore):
    """Lists written by the former read-merge-rewrite code become the dataset's first part."""
    records = [clip("a", "piano"), clip("b", "dance")]

    def key(name: str) -> str:
        return ClipStore.manifest_key("old", name)

    local_store.put_lines(key("clips.jsonl"), (r.to_json() for r in records))
    # A stale rejection beside a's clip, as old runs left them.
    local_store.put_lines(
        key("rejections.jsonl"), [rejection("a").to_json(), rejection("c").to_json()]
    )
    local_store.put_json(key("labels.json"), {"piano": 0, "dance": 1})
    dataset = Dataset(local_store, "old")
    published = dataset.publish()
    assert [c.source for c in published.clips] == ["a", "b"]
    assert [r.source for r in published.rejections] == ["c"]
    assert published.labels == {"piano": 0, "dance": 1}  # trained heads keep their classes
    assert len(dataset.part_names()) == 1
    dataset.add([clip("d", "archery")])
    assert dataset.snapshot().labels["archery"] == 2 and len(dataset.part_names()) == 2
