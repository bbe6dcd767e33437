"""An S3-compatible server on loopback (moto), for the MinIO transport of the clip store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from services.common.config import StoreSettings

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
