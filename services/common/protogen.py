"""Generate the gRPC stubs in ``generated/`` from the contracts in ``protos/``.

``python -m services.common.protogen`` (``make protos``) rewrites ``generated/hashtag2action``.
The stubs are committed so the services import them without a build step; ``stale_stubs``
regenerates into a temporary folder and lists what differs, so a test fails when someone edits a
``.proto`` and forgets to regenerate. The folder under ``protos/`` (``hashtag2action/v1``) is
the stubs' import path, because generated modules import each other by it.
"""

from __future__ import annotations

import filecmp
import importlib.resources
import logging
import shutil
import tempfile
from pathlib import Path

from grpc_tools import protoc

from services.common.errors import ConfigError
from services.common.logs import configure_logging

__all__ = ["GENERATED_ROOT", "PACKAGE", "PROTO_ROOT", "generate", "main", "stale_stubs"]

_logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = _REPO / "protos"
GENERATED_ROOT = _REPO / "generated"
PACKAGE = "hashtag2action"


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every ``.proto`` under ``proto_root`` into ``out_root``.

    Args:
        out_root: folder that receives the ``hashtag2action/...`` package tree.
        proto_root: folder holding the ``.proto`` files, by import path.

    Returns:
        The files written, relative to ``out_root``.
    """
    protos = sorted(path.relative_to(proto_root).as_posix() for path in proto_root.rglob("*.proto"))
    if not protos:
        raise ConfigError(f"no .proto files under {proto_root}")
    out_root.mkdir(parents=True, exist_ok=True)
    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise ConfigError(f"protoc failed on {proto_root} (its message is on stderr)")
    # protoc writes modules only; the packages they live in need their __init__.py.
    for folder in {Path(name).parent for name in protos}:
        for level in (folder, *folder.parents):
            if level != Path("."):
                (out_root / level / "__init__.py").touch()
    return sorted(path.relative_to(out_root) for path in out_root.rglob("*") if path.is_file())


def stale_stubs(generated_root: Path = GENERATED_ROOT, proto_root: Path = PROTO_ROOT) -> list[str]:
    """Files of ``generated_root`` that differ from a fresh generation (missing, extra, changed)."""
    with tempfile.TemporaryDirectory(prefix="h2a-protogen-") as folder:
        fresh = generate(Path(folder), proto_root)
        current = {
            path.relative_to(generated_root)
            for path in (generated_root / PACKAGE).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
        differ = [
            str(name)
            for name in fresh
            if name not in current
            or not filecmp.cmp(Path(folder) / name, generated_root / name, shallow=False)
        ]
        return sorted(differ + [str(name) for name in current - set(fresh)])


def main() -> None:
    """Regenerate ``generated/hashtag2action`` from ``protos/``."""
    configure_logging("protogen", json_lines=False)
    target = GENERATED_ROOT / PACKAGE
    # Start clean so a deleted .proto does not leave its stubs behind.
    shutil.rmtree(target, ignore_errors=True)
    written = generate(GENERATED_ROOT)
    _logger.info("wrote %d files under %s", len(written), target)


if __name__ == "__main__":
    main()
