"""The committed stubs in generated/ are exactly what protos/ generates today."""

from __future__ import annotations

from pathlib import Path

from services.common.protogen import generate, stale_stubs


def test_generated_stubs_match_protos() -> None:
    stale = stale_stubs()
    assert stale == [], f"stubs out of date, run `make protos`: {stale}"


def test_stale_check_notices_a_changed_proto(tmp_path: Path) -> None:
    protos = tmp_path / "protos" / "hashtag2action" / "v1"
    protos.mkdir(parents=True)
    (protos / "probe.proto").write_text(
        'syntax = "proto3";\npackage hashtag2action.v1;\nmessage Probe { int32 a = 1; }\n'
    )
    out = tmp_path / "generated"
    generate(out, tmp_path / "protos")
    assert stale_stubs(out, tmp_path / "protos") == []

    (protos / "probe.proto").write_text(
        'syntax = "proto3";\npackage hashtag2action.v1;\nmessage Probe { int64 a = 1; }\n'
    )
    assert stale_stubs(out, tmp_path / "protos") == ["hashtag2action/v1/probe_pb2.py"]


def test_stubs_import_by_their_package_path() -> None:
    from hashtag2action.v1 import clips_pb2, common_pb2, scenes_pb2_grpc

    request = clips_pb2.EncodeClipRequest(segment=common_pb2.Segment(start_frame=3, end_frame=9))
    assert request.segment.end_frame == 9
    assert hasattr(scenes_pb2_grpc, "SceneAnalysisStub")
