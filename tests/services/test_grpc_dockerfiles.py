"""The service Dockerfiles say what a cluster relies on (no Docker engine here to build them)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from services.common.config import GrpcSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingestion", "scenes", "persons", "clips")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), " ".join(arguments.split())))
    return found


def test_base_image_builds_in_stages_and_runs_as_uid_1000() -> None:
    steps = _instructions(ROOT / "services" / "Dockerfile")
    stages = [args for op, args in steps if op == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    runtime = steps[last_from:]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime
    assert not [args for op, args in runtime if op == "COPY" and "--from=builder" not in args]
    assert runtime[-1] == ("USER", "1000:1000")
    assert any(op == "ENV" and "PYTHONUNBUFFERED=1" in args for op, args in runtime)
    # Every path the builder copies exists, so `docker build` from the root finds it.
    for op, args in steps:
        if op == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source


@pytest.mark.parametrize("name", SERVICES)
def test_service_image_serves_its_module_on_the_default_port(name: str) -> None:
    steps = _instructions(ROOT / "services" / name / "Dockerfile")
    assert ("FROM", "${BASE_IMAGE}") in steps
    port = GrpcSettings().port
    assert ("ENV", f"H2A_GRPC_PORT={port}") in steps
    assert ("EXPOSE", str(port)) in steps
    entrypoints = [args for op, args in steps if op == "ENTRYPOINT"]
    # Exec form: python is PID 1 and receives SIGTERM itself.
    assert [json.loads(args) for args in entrypoints] == [["python", "-m", f"services.{name}"]]
    assert importlib.util.find_spec(f"services.{name}.__main__") is not None
