"""Fixtures every test area shares: real media from packages, an embedded clip store, and an
S3-compatible server on loopback (moto) for the MinIO transport."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from services.common.config import StoreSettings
from services.common.samples import sample_video
from services.common.store import ClipStore


@pytest.fixture(scope="session")
def bikes() -> Path:
    """640x272, 25 fps, 250 frames, people on bikes, hard cuts at 30, 76, 137, 187, 242."""
    return sample_video("bikes.mp4")


@pytest.fixture(scope="session")
def carphone() -> Path:
    """176x144, 29.97 fps, 120 frames, a man talking, no cut."""
    return sample_video("carphone_pristine.mp4")


@pytest.fixture(scope="session")
def bigbuckbunny() -> Path:
    """1280x720, 25 fps, 132 frames, a cartoon animal (a negative)."""
    return sample_video("bigbuckbunny.mp4")


@pytest.fixture()
def local_store(tmp_path: Path) -> ClipStore:
    return ClipStore.from_settings(StoreSettings(backend="local", root=tmp_path / "store"))


SECRET = "s3cr3t-never-logged-0123456789"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()


@pytest.fixture()
def s3_settings(s3_endpoint: str) -> StoreSettings:
    """A fresh bucket per test; part size at the S3 minimum so 6 MiB goes multipart."""
    return StoreSettings(
        backend="s3",
        endpoint=s3_endpoint,
        bucket=f"h2a-{uuid.uuid4().hex[:12]}",
        region="us-east-1",
        access_key="h2a-access",
        secret_key=SECRET,
        multipart_mb=5,
    )
