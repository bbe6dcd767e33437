"""Fixtures every test area shares: real media from packages and an embedded clip store."""

from __future__ import annotations

from pathlib import Path

import pytest

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
