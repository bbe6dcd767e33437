"""The dataset report: readable at the paper's scale (386 hashtags, records without media), and
its contact sheets made from real clips with every face blurred, reused while their clips stay
and deleted with them."""

from __future__ import annotations

import random
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from services.common.config import StoreSettings
from services.common.dataset import Dataset
from services.common.records import ClipRecord, ObjectRef, Rejection
from services.common.samples import sample_video
from services.common.store import ClipStore
from services.common.video import write_clip
from services.curation import previews, report
from services.curation.previews import (
    PreviewSettings,
    box_holds,
    centerface_boxes,
    contact_sheet,
)
from services.curation.report import LISTED_HASHTAGS, build_report, write_report

PAPER_HASHTAGS = 386
PAPER_MEAN_CLIPS = 735
# Half the score from which faces are blurred: a blurred face must not come near it.
LOW_SCORE = 0.1


def _record(hashtag: str, index: int, source_duration_s: float) -> ClipRecord:
    """A clip record without media: the report's plots and tables read only records."""
    source_id = f"{index:064x}"
    clip = ObjectRef(key=ClipStore.clip_key(source_id, 0, 150), uri="", sha256="", size=0)
    return ClipRecord(
        clip=clip,
        source_id=source_id,
        source=f"https://example.com/video/{index}",
        hashtag=hashtag,
        start_frame=0,
        end_frame=150,
        fps=30.0,
        person_frames=9,
        metadata={"source_duration_s": source_duration_s},
    )


def _paper_shaped_clips() -> list[ClipRecord]:
    """386 hashtags of at least 200 clips, about 735 on average (exponentially spread above
    200, as long-tailed as hashtag sizes are), durations spread over Table C1's bins."""
    rng = random.Random(7)
    counts = [
        200 + int(rng.expovariate(1 / (PAPER_MEAN_CLIPS - 200))) for _ in range(PAPER_HASHTAGS)
    ]
    clips, index = [], 0
    for tag, count in enumerate(counts):
        for _ in range(count):
            clips.append(_record(f"tag{tag:03d}", index, rng.choice((4.0, 7.5, 21.0))))
            index += 1
    return clips


def test_report_at_paper_scale_keeps_plots_and_tables_readable(tmp_path: Path):
    clips = _paper_shaped_clips()
    assert abs(len(clips) / PAPER_HASHTAGS - PAPER_MEAN_CLIPS) < 60
    per_hashtag: dict[str, int] = {}
    for record in clips:
        per_hashtag[record.hashtag] = per_hashtag.get(record.hashtag, 0) + 1
    rejections = [Rejection(f"s{i}", "persons", "TOO_FEW_PERSON_FRAMES", "") for i in range(3)]
    text = build_report("paper", clips, [], rejections, tmp_path).read_text()

    assert f"{len(clips)} clips" in text and f"over {PAPER_HASHTAGS} hashtags" in text
    assert "| TOO_FEW_PERSON_FRAMES | 3 |" in text
    # The plot is a histogram of a fixed size, not one bar per hashtag.
    for plot in ("clips_per_hashtag", "count_ranges", "durations", "rejections"):
        width, height = Image.open(tmp_path / "plots" / f"{plot}.png").size
        assert width <= 800 and height <= 600, (plot, width, height)
    ranked = sorted(per_hashtag.items(), key=lambda item: (-item[1], item[0]))
    section = text.split("## Clips per hashtag")[1].split("## Hashtags per clip-count range")[0]
    assert section.count("| tag") == 40
    top, bottom = section.split("fewest clips")
    assert all(f"| {tag} | {count} |" in top for tag, count in ranked[:20])
    assert all(f"| {tag} | {count} |" in bottom for tag, count in ranked[-20:])
    appendix = text.split("## All hashtags")[1]
    assert re.findall(r"^\| tag\d+ \| (\d+) \|$", appendix, re.M) == [
        str(per_hashtag[tag]) for tag in sorted(per_hashtag)
    ]
    ranges = text.split("## Hashtags per clip-count range")[1].split("## Duration")[0]
    assert sum(int(n) for n in re.findall(r"^\| \S+ \| (\d+) \|$", ranges, re.M)) == 386
    durations = text.split("## Duration of the source videos")[1].split("## Rejections")[0]
    assert sum(int(n) for n in re.findall(r"^\| [^|]+ \| (\d+) \|$", durations, re.M)) == len(clips)
    assert "No previews: the report was built without the clip store." in text


def test_small_report_lists_every_hashtag(tmp_path: Path):
    clips = [_record(f"tag{i % 3}", i, 4.0) for i in range(7)]
    text = build_report("small", clips, [], [], tmp_path).read_text()
    assert "| tag0 | 3 |" in text and "| tag1 | 2 |" in text and "| tag2 | 2 |" in text
    assert "## All hashtags" not in text and LISTED_HASHTAGS >= 3


# --- contact sheets from real clips --------------------------------------------------------

# (hashtag, sample, source frames): people talking and cycling with their faces in view.
_CLIPS = (
    ("talking", "carphone_pristine.mp4", 0, 60),
    ("cycling", "bikes.mp4", 30, 45),
    ("cycling", "bikes.mp4", 103, 137),
)
SETTINGS = PreviewSettings(clips_per_sheet=2, frames_per_clip=3)


@pytest.fixture()
def curated(tmp_path: Path) -> tuple[ClipStore, Dataset]:
    """A dataset of three real clips in a local store."""
    store = ClipStore.from_settings(StoreSettings(backend="local", root=tmp_path / "store"))
    records = []
    for index, (hashtag, sample, start, end) in enumerate(_CLIPS):
        source_id = f"{index + 1:064x}"
        local = tmp_path / f"clip{index}.mp4"
        write_clip(sample_video(sample), local, start, end)
        ref = store.put_file(ClipStore.clip_key(source_id, start, end), local)
        records.append(
            ClipRecord(ref, source_id, f"{sample}#{start}", hashtag, start, end, 29.97, 5)
        )
    dataset = Dataset(store, "demo")
    dataset.add(records)
    return store, dataset


def _faces(image: np.ndarray, score: float) -> np.ndarray:
    # Sheet tiles are small: CenterFace finds their faces at twice the size.
    return centerface_boxes(cv2.resize(image, None, fx=2, fy=2), score) / [2, 2, 2, 2, 1]


def test_report_sheets_blur_every_face_and_follow_their_clips(
    curated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store, dataset = curated
    out = tmp_path / "out"
    write_report(store, dataset.snapshot(), out, SETTINGS)
    text = (out / "report.md").read_text()
    sheets = re.findall(r"!\[#(\w+)\]\((previews/[^)]+\.jpg)\)", text)
    assert [tag for tag, _ in sheets] == ["cycling", "talking"]
    assert "### #cycling (2 clips)" in text and "### #talking (1 clip)" in text
    stored = set(store.list(f"{dataset.view_key('previews')}/"))
    assert stored == {dataset.view_key(path) for _, path in sheets}

    snapshot = dataset.snapshot()
    chosen = previews.sheet_clips(snapshot.clips, SETTINGS.clips_per_sheet)
    for tag, path in sheets:
        sheet = np.asarray(Image.open(out / path).convert("RGB"))
        assert (
            sheet.shape[0] == len(chosen[tag]) * SETTINGS.tile_height + (len(chosen[tag]) - 1) * 4
        )
        # The same sheet without the blur shows faces (found with confidence); the real one
        # none of them, not even at a low score.
        with monkeypatch.context() as patch:
            patch.setattr(previews, "blur_faces", lambda frame, boxes, pad: frame)
            contact_sheet(store, chosen[tag], tmp_path / f"{tag}-control.jpg", SETTINGS)
        control = np.asarray(Image.open(tmp_path / f"{tag}-control.jpg").convert("RGB"))
        faces = _faces(control, 0.5)
        assert len(faces) >= len(chosen[tag]), f"the {tag} clips show faces"
        assert not box_holds(_faces(sheet, LOW_SCORE), (faces[:, :2] + faces[:, 2:4]) / 2).any()

    # A second publish of the same clips reuses the stored sheets.
    def no_new_sheets(*args: object) -> None:
        raise AssertionError("a stored sheet was made again")

    monkeypatch.setattr(report, "contact_sheet", no_new_sheets)
    write_report(store, dataset.snapshot(), previews=SETTINGS)
    assert set(store.list(f"{dataset.view_key('previews')}/")) == stored
    monkeypatch.undo()

    # Purging the talking clip deletes its sheet with it.
    dataset.purge(lambda outcome: getattr(outcome, "hashtag", "") == "talking")
    write_report(store, dataset.snapshot(), previews=SETTINGS)
    left = set(store.list(f"{dataset.view_key('previews')}/"))
    assert left == {dataset.view_key(path) for tag, path in sheets if tag == "cycling"}
    assert "#talking" not in store.get_text(dataset.view_key("report.md"))
