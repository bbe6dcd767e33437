"""Settings sections shared by every entry point.

One definition, three sources: defaults in code, overridden by environment variables
(``H2A_STORE_ENDPOINT``, ``H2A_GRPC_PORT``, ...; the Helm chart's ConfigMap and Secret fill
these), overridden by CLI flags. Each entry point composes these sections into its own settings
model. Credentials are ``SecretStr``, so a settings object can be logged whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["GrpcSettings", "LoggingSettings", "StoreSettings", "default_store_root"]


_STORE_CREDENTIALS = frozenset({"access_key", "secret_key", "secret_dir"})
"""The credentials and where they come from: never in a store description, which travels in
plain sight (a pipeline run's parameters, a pod's plain environment)."""


def default_store_root() -> Path:
    """The embedded default store: a folder in the working directory."""
    return Path(".h2a") / "store"


class StoreSettings(BaseSettings):
    """Where clips, videos, manifests and checkpoints live.

    ``backend=local`` is the embedded default (a directory); ``backend=s3`` talks to MinIO or
    any S3-compatible endpoint through the ``minio`` client. Credentials come from
    ``H2A_STORE_ACCESS_KEY`` / ``H2A_STORE_SECRET_KEY`` or, when ``secret_dir`` is set, from the
    files of a mounted Kubernetes secret (keys ``accesskey``/``secretkey``, or the
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` names).
    """

    model_config = SettingsConfigDict(env_prefix="H2A_STORE_", extra="forbid")

    backend: Literal["local", "s3"] = "local"
    root: Path = Field(default_factory=default_store_root)
    """Local backend: the directory that holds the objects."""
    endpoint: str = "minio:9000"
    """S3 backend: host:port of MinIO / S3, without scheme."""
    bucket: str = "hashtag2action"
    region: str | None = None
    secure: bool = False
    """Use TLS for the S3 endpoint."""
    cert_check: bool = True
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    secret_dir: Path | None = None
    """A mounted Kubernetes secret; its files override the two keys above."""
    multipart_mb: int = Field(default=16, ge=5, le=5120)
    """Part size of multipart uploads (S3 minimum is 5 MiB)."""
    create_bucket: bool = True
    timeout_s: float = Field(default=10.0, gt=0)
    """S3 backend: connect and read timeout of one request, in seconds."""
    retries: int = Field(default=2, ge=0, le=10)
    """S3 backend: retries of a failed request (refused connection, timeout, 5xx) with a short
    backoff; an unreachable endpoint fails after about ``(retries + 1) * timeout_s``."""

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not (3 <= len(value) <= 63) or value != value.lower() or "_" in value:
            raise ValueError(f"store bucket {value!r} is not a valid S3 bucket name")
        return value

    def to_description(self) -> dict[str, Any]:
        """These settings without credentials, as JSON values (a KFP ``dict`` parameter)."""
        return self.model_dump(mode="json", exclude=set(_STORE_CREDENTIALS), exclude_none=True)

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> StoreSettings:
        """Settings from a description; the credentials, and fields it leaves out, come from
        the environment (``H2A_STORE_ACCESS_KEY``/``SECRET_KEY``, ...) or the defaults.

        Raises:
            ValueError: the description holds credentials, or names no backend (the default,
                ``local``, is never what a partial description of a cluster's store means).
        """
        given = sorted(_STORE_CREDENTIALS & set(description))
        if given:
            raise ValueError(f"a store description holds no credentials; got {given}")
        if "backend" not in description:
            raise ValueError(f"the store description {dict(description)} names no backend")
        return cls(**description)

    def to_env(self) -> dict[str, str]:
        """These settings, credentials left out, as the environment another process reads
        them from; the root is made absolute, since that process may start elsewhere."""
        described = {**self.to_description(), "root": str(self.root.resolve())}
        prefix = self.model_config["env_prefix"]
        return {
            f"{prefix}{name.upper()}": value if isinstance(value, str) else json.dumps(value)
            for name, value in described.items()
        }


class GrpcSettings(BaseSettings):
    """How a gRPC service listens."""

    model_config = SettingsConfigDict(env_prefix="H2A_GRPC_", extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(default=50051, ge=0, le=65535)
    """0 picks a free port (tests)."""
    max_workers: int = Field(default=4, ge=1, le=256)
    """Calls served concurrently."""
    max_message_mb: int = Field(default=16, ge=1, le=1024)
    grace_s: float = Field(default=30.0, ge=0)
    """How long in-flight calls may run on after SIGTERM."""
    min_deadline_s: float = Field(default=0.5, ge=0)
    """A call arriving with less time than this left is refused with DEADLINE_EXCEEDED at once
    instead of starting work whose result nobody will wait for."""


class LoggingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="H2A_LOG_", extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = True
    """JSON lines on stdout (services, cluster); false gives plain text for people."""
