"""In-process, one decode of the chosen scene feeds both the person detector and the clip.

When the whole scene becomes the clip (``segment.whole_scene``: it lasts 3.5-10 s), which
frames the clip holds does not depend on the detector's verdict. The embedded engine then reads
the scene once, from the keyframe before it: every frame goes to the clip encoder, the sampled
ones are also scaled for the detector. Run one after the other, the person sampler and the clip
encoder would each decode from that keyframe; here the sampler's pass is saved
(``benchmarks/data_engine.py``). The clip is encoded before the verdict and only stored once the
driver asks for it: a scene sent to review costs its encoding, nothing else.

The frames are those ``detect_persons`` and ``encode_clip`` decode on their own (the same
decoder, deblocked), so both ways give the same scores and the same clip; the gRPC services,
one stage per process, keep running them apart.
"""

from __future__ import annotations

from pathlib import Path

from services.clips.encode import ClipDraft, ClipSettings
from services.common.errors import H2AError
from services.common.records import Segment
from services.common.store import ClipStore
from services.common.video import VideoInfo, VideoReader
from services.persons.detect import (
    PersonResult,
    PersonSettings,
    input_size,
    sample_indices,
    score_frames,
)

__all__ = ["detect_and_draft"]


def detect_and_draft(
    path: Path,
    source_id: str,
    scene: Segment,
    info: VideoInfo,
    store: ClipStore,
    persons: PersonSettings,
    clips: ClipSettings,
) -> tuple[PersonResult, ClipDraft] | None:
    """The person verdict on ``scene`` and its clip, encoded but not stored, from one pass.

    Args:
        path: a local, readable copy of the video.
        scene: a scene the driver takes whole (``segment.whole_scene``).

    Returns:
        The verdict and the draft (the caller finishes or closes it), or None when the pass
        failed: the stages then run apart, and each meets its own error where it would.
    """
    indices = sample_indices(scene, persons.num_frames)
    sampled = set(indices)
    with VideoReader(path) as video:
        imgsz = input_size(max(video.size), persons)
        # BGR at the detector's size, as detect_persons converts them.
        convert = video.converter(imgsz, "bgr24")
        draft = ClipDraft(source_id, scene, store, clips, info, video.timeline)
        frames = {}
        try:
            for index, frame in video.window(scene.start_frame, scene.end_frame):
                draft.add(index, frame)
                if index in sampled:
                    frames[index] = convert(frame)
        except H2AError:
            draft.close()
            return None
        except BaseException:
            draft.close()
            raise
    try:
        return score_frames(frames, indices, imgsz, persons, store), draft
    except BaseException:
        draft.close()
        raise
