"""Near-duplicates in a dataset: the stated clip is kept whatever the commit order, duplicates
leave the training lists for ``duplicates.jsonl``, purging the kept source brings the other
back, and the engine signs every clip it encodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.collection.retention import purge_source
from services.common.dataset import Dataset
from services.common.records import ClipMedia, ClipRecord, ObjectRef
from services.common.signatures import MATCH_DISTANCE, Signature, signature_from_frames
from services.common.store import ClipStore
from services.common.video import read_frames, write_frames
from services.curation.curate import CurateSettings, LocalStages, curate, publish_dataset
from services.curation.report import REPORT_NAME


@pytest.fixture(scope="module")
def footage(bikes: Path, carphone: Path) -> dict[str, str]:
    """Signatures (hex): a shot of bikes, a letterboxed and mirrored copy of it, carphone."""
    shot = read_frames(bikes, range(76, 137))
    copy = np.zeros((61, 372, 640, 3), np.uint8)
    copy[:, 50:322] = shot[:, :, ::-1]
    small = np.stack([np.asarray(Image.fromarray(f).resize((320, 186))) for f in copy])
    return {
        "shot": signature_from_frames(shot).to_hex(),
        "copy": signature_from_frames(small).to_hex(),
        "other": signature_from_frames(read_frames(carphone, range(120))).to_hex(),
    }


def record(
    source_id: str, signature: str, views: int | None = None, created: str = "2026-01-01"
) -> ClipRecord:
    key = ClipStore.clip_key(source_id, 0, 100)
    metadata = {} if views is None else {"view_count": views}
    media = ClipMedia(100, 25.0, 4.0, 320, 136, "h264", 32, 0, signature=signature)
    return ClipRecord(
        ObjectRef(key, f"file:///store/{key}", "0" * 64, 10),
        source_id,
        f"https://example.com/{source_id[:8]}.mp4",
        "cycling",
        0,
        100,
        25.0,
        8,
        metadata=metadata,
        created_at=created,
        media=media,
    )


def sid(letter: str) -> str:
    return letter * 64


def test_the_stated_clip_is_kept_in_any_commit_order(
    footage: dict[str, str], local_store: ClipStore
):
    few = record(sid("a"), footage["shot"], views=100)
    many = record(sid("b"), footage["copy"], views=500)
    other = record(sid("c"), footage["other"], views=1)
    unsigned = record(sid("d"), "", views=0)
    for name, commits in (
        ("forward", [[few], [many, other, unsigned]]),
        ("back", [[many], [few, unsigned, other]]),
    ):
        dataset = Dataset(local_store, name)
        for commit in commits:
            dataset.add(commit)
        snapshot = dataset.snapshot()
        assert {c.source_id for c in snapshot.clips} == {sid("b"), sid("c"), sid("d")}
        [duplicate] = snapshot.duplicates
        assert duplicate.clip.source_id == sid("a") and duplicate.kept == many.clip.key
        assert 0 <= duplicate.distance <= MATCH_DISTANCE


def test_views_then_earliest_then_source_id(footage: dict[str, str], local_store: ClipStore):
    late = record(sid("a"), footage["shot"], views=10, created="2026-03-01")
    early = record(sid("b"), footage["copy"], views=10, created="2026-02-01")
    unknown_views = record(sid("0"), footage["copy"], created="2025-01-01")
    dataset = Dataset(local_store, "d")
    dataset.add([late, early, unknown_views])  # no view count ranks as none
    snapshot = dataset.snapshot()
    assert [c.source_id for c in snapshot.clips] == [sid("b")]
    tie = Dataset(local_store, "tie")
    tie.add([record(sid("f"), footage["shot"]), record(sid("e"), footage["copy"])])
    assert [c.source_id for c in tie.snapshot().clips] == [sid("e")]


def test_a_record_with_an_unreadable_signature_is_kept_and_the_rest_deduplicated(
    footage: dict[str, str], local_store: ClipStore
):
    dataset = Dataset(local_store, "d")
    damaged = record(sid("c"), "p1:not-hex")
    dataset.add([record(sid("a"), footage["shot"]), record(sid("b"), footage["copy"]), damaged])
    snapshot = dataset.snapshot()
    assert [c.source_id for c in snapshot.clips] == [sid("a"), sid("c")]
    assert [d.clip.source_id for d in snapshot.duplicates] == [sid("b")]


def test_duplicates_are_published_and_left_out_of_the_lists(
    footage: dict[str, str], local_store: ClipStore
):
    dataset = Dataset(local_store, "d")
    kept = record(sid("b"), footage["copy"], views=500)
    dataset.add([record(sid("a"), footage["shot"], views=100), kept])
    snapshot = publish_dataset(local_store, "d")
    pretrain = local_store.get_lines(dataset.view_key("pretrain.csv"))
    assert pretrain == [f"{kept.clip.uri} 0 -1"]
    assert len(local_store.get_lines(dataset.view_key("train.csv"))) == 1
    [line] = local_store.get_lines(dataset.view_key("duplicates.jsonl"))
    published = json.loads(line)
    assert published["outcome"] == "DUPLICATE" and published["kept"] == kept.clip.key
    assert published["source_id"] == sid("a") and published["distance"] <= MATCH_DISTANCE
    assert published["media"]["signature"] == footage["shot"]
    assert dataset.published()["duplicates"] == 1 == snapshot.counts()["duplicates"]
    report = local_store.get_text(dataset.view_key(REPORT_NAME))
    assert "duplicates removed" in report.lower()


def test_purging_the_kept_source_brings_the_duplicate_back(
    footage: dict[str, str], local_store: ClipStore
):
    dataset = Dataset(local_store, "d")
    shadowed = record(sid("a"), footage["shot"], views=100)
    dataset.add([shadowed, record(sid("b"), footage["copy"], views=500)])
    publish_dataset(local_store, "d")
    purge_source(local_store, sid("b"))
    snapshot = dataset.snapshot()
    assert [c.source_id for c in snapshot.clips] == [sid("a")] and not snapshot.duplicates
    # The purged clip's record, and its signature with it, are gone from every part.
    parts = "".join(local_store.get_text(key) for key in local_store.part_keys("d"))
    assert footage["copy"] not in parts and footage["shot"] in parts
    assert local_store.get_lines(dataset.view_key("pretrain.csv")) == [f"{shadowed.clip.uri} 0 -1"]
    assert local_store.get_lines(dataset.view_key("duplicates.jsonl")) == []


def test_the_engine_signs_each_clip_and_a_reupload_becomes_a_duplicate(
    carphone: Path, local_store: ClipStore, tmp_path: Path
):
    frames = read_frames(carphone, range(120))
    reupload = tmp_path / "talking" / "reupload.mp4"
    write_frames(reupload, np.ascontiguousarray(frames[:, :, ::-1]), fps=29.97, crf=30)
    manifest = tmp_path / "batch.jsonl"
    rows = [
        {"url": str(carphone), "hashtag": "talking", "view_count": 9},
        {"url": str(reupload), "hashtag": "talking", "view_count": 90},
    ]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = CurateSettings()
    clips = settings.clips.model_copy(update={"min_seconds": 2.0})
    stages = LocalStages(local_store, settings)
    summary = curate(str(manifest), stages, local_store, "d", progress=False, clip_settings=clips)
    assert summary.clips == 2
    snapshot = Dataset(local_store, "d").snapshot()
    [kept] = snapshot.clips
    [duplicate] = snapshot.duplicates
    assert kept.source == str(reupload) and duplicate.clip.source == str(carphone)
    for clip in (kept, duplicate.clip):
        assert Signature.from_hex(clip.media.signature)
