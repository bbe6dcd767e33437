"""The clip store: one interface over a local folder (embedded default) and MinIO/S3.

Layout (content-addressed, defined here once):

    raw/{sha256}{ext}                      a source video, named by its content
    meta/{source_id}.json                  its metadata and probe record
    clips/{source_id}/{start}-{end}.mp4    a clip, named by source and frame segment
    manifests/{dataset}/{name}             manifests, labels, reports of a dataset
    models/{name}                          detector weights and other model files
    checkpoints/{run}/{name}               training checkpoints
    state/{name}                           resumable state of long jobs

``source_id`` is the sha256 of the raw video. No half-written object is ever visible under its
final key (local: temp file + rename; S3: an object appears only when its upload completes,
multipart included). Every object carries its sha256 (S3 user metadata, a sidecar locally) and
reads verify it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from services.common.config import StoreSettings
from services.common.errors import (
    ConfigError,
    IntegrityError,
    InvalidKey,
    ObjectNotFound,
    StoreUnavailable,
)
from services.common.records import ObjectRef

__all__ = ["ClipStore", "LocalTransport", "S3Transport", "file_sha256"]

_logger = logging.getLogger(__name__)

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-=+]*)*$")
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _validate_key(key: str) -> str:
    # Keys reach file systems and URLs: no traversal, no absolute paths, no hidden parts.
    if not key or len(key) > 1024 or not _KEY_PATTERN.match(key) or ".." in key.split("/"):
        raise InvalidKey(f"invalid store key {key!r}", key=key)
    return key


class Transport(Protocol):
    """Raw object I/O; ``ClipStore`` owns layout, validation and integrity."""

    def put_file(self, key: str, path: Path, sha256: str) -> None: ...
    def get_file(self, key: str, dest: Path) -> str | None:
        """Copy the object to ``dest``; return its recorded sha256 (None if not recorded)."""
        ...

    def stat(self, key: str) -> tuple[int, str | None] | None:
        """``(size, sha256)`` of an object, or None when it does not exist."""
        ...

    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def uri(self, key: str) -> str: ...
    def presigned_url(self, key: str, expires: timedelta) -> str: ...
    def local_path(self, key: str) -> Path | None:
        """A path that can be read in place, when the transport has one."""
        ...


class LocalTransport:
    """Objects as files under ``root``; sha256 sidecars under ``root/_sha256``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / "_tmp"
        self._sums = self.root / "_sha256"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _atomic_copy(self, write: Any, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            with open(temp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        # Sidecar first: an object never appears without the sum its readers check.
        self._atomic_copy(lambda h: h.write(sha256.encode()), self._sums / key)

        def copy(handle: Any) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, _CHUNK)

        self._atomic_copy(copy, self._path(key))

    def get_file(self, key: str, dest: Path) -> str | None:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.root}", key=key)
        shutil.copyfile(path, dest)
        return self._recorded_sum(key)

    def _recorded_sum(self, key: str) -> str | None:
        sidecar = self._sums / key
        return sidecar.read_text().strip() if sidecar.is_file() else None

    def stat(self, key: str) -> tuple[int, str | None] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return path.stat().st_size, self._recorded_sum(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        (self._sums / key).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return
        for path in sorted(start.rglob("*")):
            if not path.is_file():
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(("_tmp/", "_sha256/")) or not key.startswith(prefix):
                continue
            yield key

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def presigned_url(self, key: str, expires: timedelta) -> str:
        return self.uri(key)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None


class S3Transport:
    """MinIO / S3 through the ``minio`` client; sha256 kept as user metadata."""

    _SHA_HEADER = "x-amz-meta-sha256"

    def __init__(self, settings: StoreSettings) -> None:
        from minio import Minio

        access_key, secret_key = _credentials(settings)
        self.bucket = settings.bucket
        self.part_size = settings.multipart_mb * 1024 * 1024
        self.client = Minio(
            settings.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            region=settings.region,
            secure=settings.secure,
            cert_check=settings.cert_check,
        )
        if settings.create_bucket:
            with self._errors("bucket"):
                if not self.client.bucket_exists(self.bucket):
                    self.client.make_bucket(self.bucket)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        try:
            yield
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject"):
                missing = f"no object {key!r} in bucket {self.bucket}"
                raise ObjectNotFound(missing, key=key) from None
            raise StoreUnavailable(f"S3 error on {key!r}: {error.code}", key=key) from error
        except (HTTPError, OSError) as error:
            raise StoreUnavailable(
                f"S3 endpoint unreachable on {key!r}: {type(error).__name__}", key=key
            ) from error

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        with self._errors(key):
            # Uploads above part_size go multipart; the object is visible only on completion.
            self.client.fput_object(
                self.bucket, key, str(path), metadata={"sha256": sha256}, part_size=self.part_size
            )

    def get_file(self, key: str, dest: Path) -> str | None:
        with self._errors(key):
            response = self.client.get_object(self.bucket, key)
            try:
                with open(dest, "wb") as handle:
                    for block in response.stream(_CHUNK):
                        handle.write(block)
                return response.headers.get(self._SHA_HEADER)
            finally:
                response.close()
                response.release_conn()

    def stat(self, key: str) -> tuple[int, str | None] | None:
        try:
            with self._errors(key):
                info = self.client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return None
        metadata = {k.lower(): v for k, v in (info.metadata or {}).items()}
        return int(info.size or 0), metadata.get(self._SHA_HEADER)

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.remove_object(self.bucket, key)

    def list(self, prefix: str) -> Iterator[str]:
        with self._errors(prefix):
            for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                yield item.object_name

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def presigned_url(self, key: str, expires: timedelta) -> str:
        with self._errors(key):
            return self.client.presigned_get_object(self.bucket, key, expires=expires)

    def local_path(self, key: str) -> Path | None:
        return None


def _credentials(settings: StoreSettings) -> tuple[str | None, str | None]:
    access = settings.access_key.get_secret_value() if settings.access_key else None
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    if settings.secret_dir is not None:
        folder = Path(settings.secret_dir)
        if not folder.is_dir():
            raise ConfigError(f"store secret_dir {folder} is not a mounted secret folder")
        for access_name, secret_name in (
            ("accesskey", "secretkey"),
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            ("access_key", "secret_key"),
        ):
            if (folder / access_name).is_file() and (folder / secret_name).is_file():
                access = (folder / access_name).read_text().strip()
                secret = (folder / secret_name).read_text().strip()
                break
        else:
            raise ConfigError(f"store secret_dir {folder} has no access/secret key files")
    return access, secret


class ClipStore:
    """Content-addressed object store with integrity checks; see the module docstring."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    def from_settings(cls, settings: StoreSettings | None = None) -> ClipStore:
        settings = settings or StoreSettings()
        if settings.backend == "local":
            return cls(LocalTransport(settings.root))
        return cls(S3Transport(settings))

    # --- layout -------------------------------------------------------------------------
    @staticmethod
    def raw_key(sha256: str, suffix: str = ".mp4") -> str:
        suffix = suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix or "") else ".bin"
        return f"raw/{sha256}{suffix}"

    @staticmethod
    def meta_key(source_id: str) -> str:
        return _validate_key(f"meta/{source_id}.json")

    @staticmethod
    def clip_key(source_id: str, start_frame: int, end_frame: int) -> str:
        return _validate_key(f"clips/{source_id}/{start_frame:06d}-{end_frame:06d}.mp4")

    @staticmethod
    def manifest_key(dataset: str, name: str) -> str:
        return _validate_key(f"manifests/{dataset}/{name}")

    @staticmethod
    def model_key(name: str) -> str:
        return _validate_key(f"models/{name}")

    @staticmethod
    def checkpoint_key(run: str, name: str) -> str:
        return _validate_key(f"checkpoints/{run}/{name}")

    @staticmethod
    def state_key(name: str) -> str:
        return _validate_key(f"state/{name}")

    # --- writes -------------------------------------------------------------------------
    def put_file(self, key: str, path: Path) -> ObjectRef:
        """Store a file under ``key``; a re-put of identical content is a no-op."""
        _validate_key(key)
        sha256 = file_sha256(path)
        size = Path(path).stat().st_size
        existing = self.transport.stat(key)
        if existing is None or existing[1] != sha256:
            self.transport.put_file(key, Path(path), sha256)
        return ObjectRef(key=key, uri=self.transport.uri(key), sha256=sha256, size=size)

    def put_bytes(self, key: str, data: bytes) -> ObjectRef:
        with tempfile.TemporaryDirectory(prefix="h2a-put-") as folder:
            path = Path(folder) / "object"
            path.write_bytes(data)
            return self.put_file(key, path)

    def put_text(self, key: str, text: str) -> ObjectRef:
        return self.put_bytes(key, text.encode("utf-8"))

    def put_json(self, key: str, value: Any) -> ObjectRef:
        return self.put_text(key, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")

    def put_lines(self, key: str, lines: Iterable[str]) -> ObjectRef:
        """Write a whole manifest at once: readers see the old or the new one, never half."""
        return self.put_text(key, "".join(f"{line}\n" for line in lines))

    def delete(self, key: str) -> None:
        self.transport.delete(_validate_key(key))

    # --- reads --------------------------------------------------------------------------
    def stat(self, key: str) -> ObjectRef | None:
        found = self.transport.stat(_validate_key(key))
        if found is None:
            return None
        size, sha256 = found
        return ObjectRef(key=key, uri=self.transport.uri(key), sha256=sha256 or "", size=size)

    def exists(self, key: str) -> bool:
        return self.transport.stat(_validate_key(key)) is not None

    def list(self, prefix: str = "") -> list[str]:
        if prefix:
            _validate_key(prefix.rstrip("/"))
        return list(self.transport.list(prefix))

    def download(self, key: str, dest: Path, sha256: str | None = None) -> Path:
        """Copy an object to ``dest``, verifying it against ``sha256`` or its recorded sum."""
        _validate_key(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        recorded = self.transport.get_file(key, dest)
        expected = sha256 or recorded
        if expected:
            actual = file_sha256(dest)
            if actual != expected:
                dest.unlink(missing_ok=True)
                raise IntegrityError(
                    f"object {key!r} has sha256 {actual[:12]}…, expected {expected[:12]}…", key=key
                )
        return dest

    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        with tempfile.TemporaryDirectory(prefix="h2a-get-") as folder:
            return self.download(key, Path(folder) / "object", sha256).read_bytes()

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode("utf-8")

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_text(key))

    def get_lines(self, key: str) -> list[str]:
        """Lines of a text object; a missing manifest reads as empty."""
        if not self.exists(key):
            return []
        return [line for line in self.get_text(key).splitlines() if line.strip()]

    @contextlib.contextmanager
    def open_local(self, ref: ObjectRef | str) -> Iterator[Path]:
        """A readable local path for an object, verified; temporary for remote transports."""
        key = ref if isinstance(ref, str) else ref.key
        expected = None if isinstance(ref, str) else ref.sha256 or None
        in_place = self.transport.local_path(_validate_key(key))
        if in_place is not None:
            recorded = self.transport.stat(key)
            want = expected or (recorded[1] if recorded else None)
            if want and file_sha256(in_place) != want:
                raise IntegrityError(f"object {key!r} does not match its sha256", key=key)
            yield in_place
            return
        with tempfile.TemporaryDirectory(prefix="h2a-obj-") as folder:
            yield self.download(key, Path(folder) / Path(key).name, expected)

    # --- addressing ---------------------------------------------------------------------
    def uri(self, key: str) -> str:
        return self.transport.uri(_validate_key(key))

    def key_from_uri(self, uri: str) -> str:
        """Inverse of ``uri``: the key of an object of this store, or InvalidKey."""
        prefix = self.transport.uri("x")[:-1]
        if not uri.startswith(prefix):
            raise InvalidKey(f"{uri!r} is not an object of this store ({prefix}…)")
        return _validate_key(uri[len(prefix) :])

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.transport.presigned_url(_validate_key(key), expires)

    def describe(self) -> str:
        """Where the store is, for people (no credentials)."""
        parsed = urlparse(self.transport.uri("x"))
        if parsed.scheme == "file":
            return str(Path(parsed.path).parent)
        return f"s3://{parsed.netloc}"
