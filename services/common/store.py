"""The clip store: one interface over a local folder (embedded default) and MinIO/S3.

Layout (content-addressed, defined here once; ``LAYOUT_PREFIXES`` are its top-level folders):

    raw/{sha256}{ext}                         a source video, named by its content
    meta/{source_id}.json                     its metadata and probe record
    clips/{source_id}/{start}-{end}.mp4       a clip, named by source and frame segment
    manifests/{dataset}/{name}                manifests, labels, reports of a dataset
    manifests/{dataset}/parts/{name}.jsonl    a part of a dataset's records
    manifests/{dataset}/quarantine/{name}     what a dataset set aside as unreadable
    manifests/{dataset}/shards/{name}         its training shards (WebDataset tars), index.json
    models/{name}                             detector weights and other model files
    checkpoints/{run}/{name}                  training checkpoints
    state/{name}                              resumable state of long jobs

``source_id`` is the sha256 of the raw video. Every object carries its sha256, visible together
with its bytes or not at all:

* S3: the sum is the object's own user metadata, and an object appears only when its upload
  completes (multipart included).
* Local: a sidecar ``_sha256/{key}``. A put, under an exclusive per-key lock, deletes the
  sidecar, then writes the object, then the sidecar (each a temporary file, fsync, rename), so
  a crash at any instant leaves the old pair, the new pair, or an object without a sidecar.

An object inside the layout without a sum is *absent* (stat None, reads ObjectNotFound, not
listed locally): it is a put that did not finish, and the next writer simply writes it again.
Objects outside the layout (a benchmark uploaded by hand) may have no sum and are read
unverified. Every read of an object with a sum verifies it (a stream read, ``open_stream``,
when it reaches the end); ``put_file`` checks the bytes already stored before it skips an upload,
and rewrites them when they do not verify.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple, Protocol
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
from services.common.scratch import clean_stale_scratch, scratch_dir

__all__ = [
    "LAYOUT_PREFIXES",
    "ClipStore",
    "FileDigests",
    "LocalTransport",
    "ObjectInfo",
    "S3Transport",
    "VerifyingReader",
    "file_digests",
    "file_sha256",
]

_logger = logging.getLogger(__name__)

LAYOUT_PREFIXES = ("raw/", "meta/", "clips/", "manifests/", "checkpoints/", "state/")
"""Top-level folders only the store writes; an object in them without a recorded sum is absent.
``models/`` is not one: people upload detector weights there with their own tools, so weights are
verified when they carry a sum and read as they are otherwise."""

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-=+]*)*$")
_CHUNK = 1 << 20
# Local lock files are striped by key hash: a bounded number of files (they are never deleted,
# deleting a flock file races its next user); a shared stripe only serialises two keys.
_LOCK_STRIPE_HEX = 3
_LEGACY_PART_AGE_S = 60.0


class FileDigests(NamedTuple):
    """Sums of a file computed in one pass."""

    sha256: str
    size: int
    etag: str | None
    """The ETag S3 gives the file uploaded with the transport's part size; None if not asked."""


class ObjectInfo(NamedTuple):
    """What a transport knows of a stored object without reading it."""

    size: int
    sha256: str | None
    """The recorded sum; None only for objects outside the layout."""
    etag: str | None = None
    """S3's ETag (an MD5 of the bytes or of their parts); None on the local transport."""


def file_sha256(path: Path) -> str:
    """The sha256 of a file.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    return file_digests(path).sha256


def file_digests(path: Path, part_size: int | None = None) -> FileDigests:
    """sha256, size and (optionally) the S3 ETag of a file, reading it once.

    The ETag is what S3 records for the file uploaded the way ``minio``'s ``fput_object`` does
    with ``part_size``: one plain PUT when the file fits in one part (ETag: MD5 hex), otherwise
    multipart in parts of ``part_size`` bytes, the last one possibly shorter (ETag: MD5 of the
    concatenated binary part MD5s, ``-``, number of parts).

    Args:
        path: the file.
        part_size: multipart part size in bytes; None skips the ETag.

    Returns:
        The file's digests.
    """
    sha256 = hashlib.sha256()
    part = hashlib.md5(usedforsecurity=False)
    parts: list[bytes] = []
    filled = size = 0
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            sha256.update(block)
            size += len(block)
            if part_size is None:
                continue
            view = memoryview(block)
            while view:
                taken = view[: part_size - filled]
                part.update(taken)
                filled += len(taken)
                view = view[len(taken) :]
                if filled == part_size:
                    parts.append(part.digest())
                    part, filled = hashlib.md5(usedforsecurity=False), 0
    if part_size is None:
        return FileDigests(sha256.hexdigest(), size, None)
    if filled or not parts:
        parts.append(part.digest())
    if len(parts) == 1:
        etag = parts[0].hex()
    else:
        etag = f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"
    return FileDigests(sha256.hexdigest(), size, etag)


def _validate_key(key: str) -> str:
    # Keys reach file systems and URLs: no traversal, no absolute paths, no hidden parts.
    if not key or len(key) > 1024 or not _KEY_PATTERN.match(key) or ".." in key.split("/"):
        raise InvalidKey(f"invalid store key {key!r}", key=key)
    return key


def _validate_part(part: str) -> str:
    # Ids that name one folder level (source ids, datasets): listings split keys on "/".
    if "/" in part:
        raise InvalidKey(f"invalid store key part {part!r}", key=part)
    return _validate_key(part)


def _in_layout(key: str) -> bool:
    return key.startswith(LAYOUT_PREFIXES)


class VerifyingReader:
    """A binary stream that hashes the bytes read through it; the read that meets the end
    raises IntegrityError unless they hash to ``sha256`` (None: nothing to check).

    Args:
        raw: the stream read from (anything with ``read(n)``).
        sha256: the sum the whole stream must have.
        key: names the object in the error.
    """

    def __init__(self, raw: Any, sha256: str | None, key: str) -> None:
        self._raw = raw
        self._expected = sha256
        self._digest = hashlib.sha256()
        self._ended = False
        self.key = key
        self.size = 0
        """Bytes read so far."""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read() if size is None or size < 0 else self._raw.read(size)
        if data:
            self._digest.update(data)
            self.size += len(data)
        elif size != 0 and not self._ended:
            self._ended = True
            actual = self._digest.hexdigest()
            if self._expected and actual != self._expected:
                raise IntegrityError(
                    f"object {self.key!r} has sha256 {actual[:12]}…, "
                    f"expected {self._expected[:12]}…",
                    key=self.key,
                )
        return data

    def drain(self) -> None:
        """Read (and hash) the rest, so the end is checked."""
        while self.read(_CHUNK):
            pass


class Transport(Protocol):
    """Raw object I/O; ``ClipStore`` owns layout, validation and integrity.

    Transports treat an object inside the layout without a recorded sum as absent.
    """

    part_size: int | None
    """Multipart part size when ``stat`` reports S3 ETags; None when it reports none."""

    def put_file(self, key: str, path: Path, sha256: str) -> None: ...
    def get_file(self, key: str, dest: Path) -> str | None:
        """Copy the object to ``dest``; return its recorded sha256 (None if not recorded)."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """What is known of an object, or None when it is absent."""
        ...

    def holds(self, key: str, sha256: str) -> bool:
        """Whether the stored bytes of ``key`` hash to ``sha256`` (reads them all)."""
        ...

    def open_stream(self, key: str) -> contextlib.AbstractContextManager[tuple[Any, str | None]]:
        """The object's bytes as a binary stream (``read(n)``) and its recorded sha256 (None if
        not recorded); ObjectNotFound when absent."""
        ...

    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def uri(self, key: str) -> str: ...
    def presigned_url(self, key: str, expires: timedelta) -> str: ...
    def local_path(self, key: str) -> Path | None:
        """A path that can be read in place, when the transport has one."""
        ...


def _fsync_dir(folder: Path) -> None:
    # A rename or unlink is durable only once its folder is: crash order must match ours.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalTransport:
    """Objects as files under ``root``; sha256 sidecars under ``root/_sha256``.

    Writers of a key hold an exclusive flock on its lock file under ``root/_locks`` (so
    processes writing one key serialise); readers of the object-sidecar pair hold a shared one.
    Temporary files live in this process's scratch folder under ``root/_tmp``; constructing a
    transport removes those of dead processes.
    """

    part_size: int | None = None

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / "_tmp"
        self._sums = self.root / "_sha256"
        self._locks = self.root / "_locks"
        for folder in (self._tmp, self._sums, self._locks):
            # A read-only store (a dataset mounted into a training pod) must stay readable.
            with contextlib.suppress(OSError):
                folder.mkdir(parents=True, exist_ok=True)
        clean_stale_scratch(self._tmp)
        self._remove_legacy_parts()

    def _remove_legacy_parts(self) -> None:
        # Older versions wrote loose _tmp/*.part files; one a minute old is no live write.
        cutoff = time.time() - _LEGACY_PART_AGE_S
        for part in self._tmp.glob("*.part"):
            with contextlib.suppress(OSError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    def _path(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def _locked(self, key: str, exclusive: bool) -> Iterator[None]:
        digest = hashlib.sha256(key.encode()).hexdigest()[:_LOCK_STRIPE_HEX]
        descriptor: int | None
        try:
            descriptor = os.open(self._locks / digest, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            if exclusive:
                raise
            descriptor = None  # a read-only store: no writer to order reads against
        try:
            if descriptor is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            if descriptor is not None:
                os.close(descriptor)

    def _atomic_write(self, write: Callable[[IO[bytes]], Any], final: Path, scratch: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = scratch / final.name
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        _fsync_dir(final.parent)

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        sidecar = self._sums / key

        def copy(handle: IO[bytes]) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, _CHUNK)

        with self._locked(key, exclusive=True), scratch_dir("put-", self._tmp) as scratch:
            if sidecar.is_file():
                sidecar.unlink()
                _fsync_dir(sidecar.parent)
            self._atomic_write(copy, self._path(key), scratch)
            self._atomic_write(lambda h: h.write(sha256.encode()), sidecar, scratch)

    def _recorded_sum(self, key: str) -> str | None:
        try:
            return (self._sums / key).read_text().strip() or None
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _present(self, key: str) -> bool:
        # Cheap, lock-free: listings and in-place paths check only that the pair exists.
        return self._path(key).is_file() and (not _in_layout(key) or (self._sums / key).is_file())

    def get_file(self, key: str, dest: Path) -> str | None:
        with self._locked(key, exclusive=False):
            recorded = self._recorded_sum(key)
            if not self._path(key).is_file() or (recorded is None and _in_layout(key)):
                raise ObjectNotFound(f"no object {key!r} in {self.root}", key=key)
            shutil.copyfile(self._path(key), dest)
        return recorded

    @contextlib.contextmanager
    def open_stream(self, key: str) -> Iterator[tuple[IO[bytes], str | None]]:
        with contextlib.ExitStack() as stack:
            # The lock only pairs sidecar and object: an open file keeps reading the bytes it
            # opened (a put replaces the name), so a long read does not hold writers back.
            with self._locked(key, exclusive=False):
                recorded = self._recorded_sum(key)
                try:
                    if recorded is None and _in_layout(key):
                        raise FileNotFoundError(key)
                    handle = stack.enter_context(open(self._path(key), "rb"))
                except (FileNotFoundError, IsADirectoryError):
                    raise ObjectNotFound(f"no object {key!r} in {self.root}", key=key) from None
            yield handle, recorded

    def stat(self, key: str) -> ObjectInfo | None:
        if not self._path(key).is_file():
            return None  # nothing to pair: spare the lock
        with self._locked(key, exclusive=False):
            try:
                size = self._path(key).stat().st_size
            except FileNotFoundError:
                return None
            recorded = self._recorded_sum(key)
        if recorded is None and _in_layout(key):
            return None
        return ObjectInfo(size, recorded)

    def holds(self, key: str, sha256: str) -> bool:
        try:
            return file_sha256(self._path(key)) == sha256
        except (FileNotFoundError, IsADirectoryError):
            return False

    def delete(self, key: str) -> None:
        with self._locked(key, exclusive=True):
            # Sidecar first: an interrupted delete leaves an absent object, never a wrong sum.
            (self._sums / key).unlink(missing_ok=True)
            self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return
        for path in sorted(start.rglob("*")):
            if not path.is_file():
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(("_tmp/", "_sha256/", "_locks/")) or not key.startswith(prefix):
                continue
            if self._present(key):
                yield key

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def presigned_url(self, key: str, expires: timedelta) -> str:
        return self.uri(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key) if self._present(key) else None


class S3Transport:
    """MinIO / S3 through the ``minio`` client; sha256 kept as user metadata.

    Requests time out after ``settings.timeout_s`` and are retried ``settings.retries`` times,
    so an unreachable endpoint raises StoreUnavailable in bounded time.
    """

    _SHA_HEADER = "x-amz-meta-sha256"

    def __init__(self, settings: StoreSettings) -> None:
        self._settings = settings
        self.bucket = settings.bucket
        self.part_size: int | None = settings.multipart_mb * 1024 * 1024
        self._pid = os.getpid()
        self._client = self._connect()
        if settings.create_bucket:
            with self._errors("bucket"):
                if not self.client.bucket_exists(self.bucket):
                    self.client.make_bucket(self.bucket)

    def _connect(self) -> Any:
        import certifi
        import urllib3
        from minio import Minio

        settings = self._settings
        access_key, secret_key = _credentials(settings)
        # minio's own client waits 5 minutes per attempt, 6 attempts: far too long to say "down".
        http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=settings.timeout_s, read=settings.timeout_s),
            maxsize=10,
            cert_reqs="CERT_REQUIRED" if settings.cert_check else "CERT_NONE",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=settings.retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        return Minio(
            settings.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            region=settings.region,
            secure=settings.secure,
            cert_check=settings.cert_check,
            http_client=http_client,
        )

    @property
    def client(self) -> Any:
        """The ``minio`` client of this process.

        A forked child (a DataLoader worker) connects anew: two processes on one pooled
        connection would read each other's responses.
        """
        if self._pid != os.getpid():
            self._client, self._pid = self._connect(), os.getpid()
        return self._client

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        try:
            yield
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject"):
                missing = f"no object {key!r} in bucket {self.bucket}"
                raise ObjectNotFound(missing, key=key) from None
            raise StoreUnavailable(f"S3 error on {key!r}: {error.code}", key=key) from error
        except MinioException as error:  # a server error or a response that is not S3's
            raise StoreUnavailable(
                f"S3 failure on {key!r}: {type(error).__name__}", key=key
            ) from error
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

    @contextlib.contextmanager
    def _body(self, key: str) -> Iterator[Any]:
        """The object's response, open; ObjectNotFound for an in-layout object without sum."""
        with self._errors(key):
            response = self.client.get_object(self.bucket, key)
            try:
                if response.headers.get(self._SHA_HEADER) is None and _in_layout(key):
                    raise ObjectNotFound(f"object {key!r} has no recorded sha256", key=key)
                yield response
            finally:
                response.close()
                response.release_conn()

    @contextlib.contextmanager
    def open_stream(self, key: str) -> Iterator[tuple[Any, str | None]]:
        # Reads happen inside _body's error mapping: a connection lost mid-stream is
        # StoreUnavailable like any other.
        with self._body(key) as response:
            yield response, response.headers.get(self._SHA_HEADER)

    def get_file(self, key: str, dest: Path) -> str | None:
        with self._body(key) as response, open(dest, "wb") as handle:
            for block in response.stream(_CHUNK):
                handle.write(block)
            return response.headers.get(self._SHA_HEADER)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors(key):
                info = self.client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return None
        metadata = {k.lower(): v for k, v in (info.metadata or {}).items()}
        recorded = metadata.get(self._SHA_HEADER)
        if recorded is None and _in_layout(key):
            return None
        return ObjectInfo(int(info.size or 0), recorded, info.etag or None)

    def holds(self, key: str, sha256: str) -> bool:
        digest = hashlib.sha256()
        try:
            with self._body(key) as response:
                for block in response.stream(_CHUNK):
                    digest.update(block)
        except ObjectNotFound:
            return False
        return digest.hexdigest() == sha256

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.remove_object(self.bucket, key)

    def list(self, prefix: str) -> Iterator[str]:
        # Listings carry no user metadata: an in-layout object without a sum (written by
        # another tool; ours carry it from birth) is listed, and reads as absent.
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
    """Content-addressed object store with integrity checks; see the module docstring.

    Objects that ``put_file`` found corrupted and rewrote are collected for the caller's report
    (``drain_repairs``); the collection is shared by every thread using the store. The store's
    own temporary folders live in the system scratch space (``services.common.scratch``);
    constructing a store removes those that dead processes left.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        clean_stale_scratch()
        self._repairs: list[str] = []
        self._repairs_lock = threading.Lock()
        # Objects open_local hashed in place, with the file state they matched: a loader
        # reading a clip every epoch hashes it once per process, again only if it changes.
        self._verified: dict[str, tuple[str, int, int]] = {}

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
    def clip_prefix(source_id: str) -> str:
        """The folder of a source's clips: ``clips/{source_id}/``."""
        return f"clips/{_validate_part(source_id)}/"

    @staticmethod
    def manifest_key(dataset: str, name: str) -> str:
        return _validate_key(f"manifests/{dataset}/{name}")

    @staticmethod
    def dataset_prefix(dataset: str) -> str:
        """The folder of a dataset's manifests: ``manifests/{dataset}/``."""
        return f"manifests/{_validate_part(dataset)}/"

    @staticmethod
    def dataset_of(prefix: str) -> str | None:
        """The dataset whose folder ``prefix`` is (``manifests/{dataset}/``), else None."""
        parts = prefix.rstrip("/").split("/")
        if len(parts) == 2 and parts[0] == "manifests" and parts[1]:
            return _validate_part(parts[1])
        return None

    @staticmethod
    def part_prefix(dataset: str) -> str:
        """The folder of a dataset's record parts: ``manifests/{dataset}/parts/``."""
        return f"{ClipStore.dataset_prefix(dataset)}parts/"

    @staticmethod
    def part_key(dataset: str, name: str) -> str:
        """A part of a dataset's records: ``manifests/{dataset}/parts/{name}.jsonl``."""
        return f"{ClipStore.part_prefix(dataset)}{_validate_part(f'{name}.jsonl')}"

    @staticmethod
    def quarantine_prefix(dataset: str) -> str:
        """The folder of what a dataset set aside: ``manifests/{dataset}/quarantine/``."""
        return f"{ClipStore.dataset_prefix(dataset)}quarantine/"

    @staticmethod
    def quarantine_key(dataset: str, name: str) -> str:
        """What a dataset set aside: ``manifests/{dataset}/quarantine/{name}``."""
        return _validate_key(f"{ClipStore.quarantine_prefix(dataset)}{name}")

    @staticmethod
    def shard_prefix(dataset: str) -> str:
        """The folder of a dataset's training shards: ``manifests/{dataset}/shards/``."""
        return f"{ClipStore.dataset_prefix(dataset)}shards/"

    @staticmethod
    def shard_key(dataset: str, name: str) -> str:
        """A training shard or the shard index: ``manifests/{dataset}/shards/{name}``."""
        return f"{ClipStore.shard_prefix(dataset)}{_validate_part(name)}"

    @staticmethod
    def model_key(name: str) -> str:
        return _validate_key(f"models/{name}")

    @staticmethod
    def checkpoint_key(run: str, name: str) -> str:
        return _validate_key(f"checkpoints/{run}/{name}")

    @staticmethod
    def state_key(name: str) -> str:
        return _validate_key(f"state/{name}")

    @staticmethod
    def state_prefix(name: str) -> str:
        """The folder of a job's state: ``state/{name}/``."""
        return f"{_validate_key(f'state/{name}')}/"

    # --- layout listings ----------------------------------------------------------------
    def source_objects(self, source_id: str) -> list[str]:
        """Every existing object of one source, in the order a purge should delete them.

        Clips first, then the metadata, then the raw video: an interrupted purge still has the
        raw object and its meta to be found and finished by the next one.

        Args:
            source_id: sha256 of the raw video.

        Returns:
            Keys of its clips (sorted), its ``meta/`` object and its ``raw/`` object(s).
        """
        clips = self.list(self.clip_prefix(source_id))
        meta = [key for key in [self.meta_key(source_id)] if self.exists(key)]
        # Listing is by prefix: keep only this id's raw object, never another id it prefixes.
        raw = [
            key
            for key in self.list(f"raw/{source_id}")
            if key.count("/") == 1 and PurePosixPath(key).stem == source_id
        ]
        return [*clips, *meta, *raw]

    def meta_source_ids(self) -> list[str]:
        """Source ids that have a ``meta/`` object, sorted."""
        return sorted(
            key.removeprefix("meta/").removesuffix(".json")
            for key in self.list("meta/")
            if key.count("/") == 1 and key.endswith(".json")
        )

    def clip_source_ids(self) -> list[str]:
        """Source ids that have at least one object under ``clips/``, sorted."""
        return sorted({key.split("/")[1] for key in self.list("clips/") if key.count("/") >= 2})

    def dataset_names(self) -> list[str]:
        """Datasets with any object under ``manifests/``, sorted."""
        return sorted({key.split("/")[1] for key in self.list("manifests/") if key.count("/") >= 2})

    def part_keys(self, dataset: str) -> list[str]:
        """Keys of a dataset's record parts (``part_key``), sorted."""
        prefix = self.part_prefix(dataset)
        return sorted(
            key
            for key in self.list(prefix)
            if key.endswith(".jsonl") and "/" not in key.removeprefix(prefix)
        )

    # --- writes -------------------------------------------------------------------------
    def put_file(self, key: str, path: Path) -> ObjectRef:
        """Store a file under ``key``.

        When the object already records the file's sha256 its bytes are checked first (local:
        hashed in place; S3: ETag against the file's MD5 ETag, a download only when those
        differ): intact bytes are left alone, corrupted ones are rewritten and reported by
        ``drain_repairs``. An object recording another sum is overwritten without being read.

        Args:
            key: the object's key.
            path: the file to store.

        Returns:
            A reference to the stored object.

        Raises:
            InvalidKey: the key is not a valid store key.
            StoreUnavailable: the backend cannot be reached.
        """
        _validate_key(key)
        path = Path(path)
        digests = file_digests(path, self.transport.part_size)
        ref = ObjectRef(
            key=key, uri=self.transport.uri(key), sha256=digests.sha256, size=digests.size
        )
        existing = self.transport.stat(key)
        same_sum = existing is not None and existing.sha256 == digests.sha256
        if same_sum and self._intact(key, existing, digests):
            return ref
        self.transport.put_file(key, path, digests.sha256)
        if same_sum:
            _logger.warning("repaired object %s", key, extra={"key": key, "stage": "store"})
            with self._repairs_lock:
                self._repairs.append(key)
        return ref

    def _intact(self, key: str, existing: ObjectInfo | None, digests: FileDigests) -> bool:
        # An equal ETag proves the bytes without reading them; a different one may only mean
        # another part size (or an SSE-KMS ETag), so only reading them can condemn them.
        if existing is not None and digests.etag is not None and existing.etag == digests.etag:
            return True
        return self.transport.holds(key, digests.sha256)

    @property
    def repairs(self) -> tuple[str, ...]:
        """Keys ``put_file`` found corrupted and rewrote (or ``quarantine`` set aside), not
        drained yet."""
        with self._repairs_lock:
            return tuple(self._repairs)

    def drain_repairs(self) -> list[str]:
        """The keys ``put_file`` repaired (or ``quarantine`` set aside) since the last call,
        oldest first; clears them.

        Returns:
            Repaired keys (a key repaired twice appears twice).
        """
        with self._repairs_lock:
            drained, self._repairs = self._repairs, []
        return drained

    def put_bytes(self, key: str, data: bytes) -> ObjectRef:
        with scratch_dir("put-") as folder:
            path = folder / "object"
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

    def quarantine(self, key: str, dest: str) -> ObjectRef:
        """Move an object, as it is (corrupted or not), to ``dest`` and delete it at ``key``.

        The moved copy records the sum of the bytes it really has, so it reads back for
        inspection; the original key becomes absent and its next writer starts afresh.
        ``drain_repairs`` reports the key like a repaired one.

        Args:
            key: the object to set aside.
            dest: where to keep it (a ``quarantine_key``).

        Returns:
            A reference to the quarantined copy.

        Raises:
            ObjectNotFound: no object at ``key``.
            StoreUnavailable: the backend cannot be reached.
        """
        _validate_key(key)
        with scratch_dir("quarantine-") as folder:
            copy = folder / "object"
            self.transport.get_file(key, copy)  # unverified on purpose: it is the evidence
            ref = self.put_file(_validate_key(dest), copy)
        self.transport.delete(key)
        with self._repairs_lock:
            self._repairs.append(key)
        return ref

    # --- reads --------------------------------------------------------------------------
    def stat(self, key: str) -> ObjectRef | None:
        found = self.transport.stat(_validate_key(key))
        if found is None:
            return None
        return ObjectRef(
            key=key, uri=self.transport.uri(key), sha256=found.sha256 or "", size=found.size
        )

    def exists(self, key: str) -> bool:
        return self.transport.stat(_validate_key(key)) is not None

    def verify(self, key: str, sha256: str | None = None) -> ObjectRef | None:
        """The object's reference if its stored bytes verify, else None.

        Use it to decide whether an existing object may be reused. It reads the whole object:
        in place on the local transport, a download (streamed, not kept) on S3.

        Args:
            key: the object's key.
            sha256: the sum the bytes must have; default: the object's recorded sum.

        Returns:
            The reference, or None when the object is absent, records a different sum than
            ``sha256``, has no sum to check against, or its bytes do not match.

        Raises:
            InvalidKey: the key is not a valid store key.
            StoreUnavailable: the backend cannot be reached.
        """
        found = self.transport.stat(_validate_key(key))
        if found is None:
            return None
        expected = sha256 or found.sha256
        if not expected or (found.sha256 and found.sha256 != expected):
            return None
        if not self.transport.holds(key, expected):
            return None
        return ObjectRef(key=key, uri=self.transport.uri(key), sha256=expected, size=found.size)

    def list(self, prefix: str = "") -> list[str]:
        if prefix:
            _validate_key(prefix.rstrip("/"))
        return list(self.transport.list(prefix))

    def download(self, key: str, dest: Path, sha256: str | None = None) -> Path:
        """Copy an object to ``dest``, verifying it against ``sha256`` or its recorded sum.

        Args:
            key: the object's key.
            dest: the file to write (its folder is made).
            sha256: the sum the bytes must have; default: the object's recorded sum (objects
                outside the layout may have none and are copied unverified).

        Returns:
            ``dest``.

        Raises:
            ObjectNotFound: no such object, or an unfinished one (in the layout, no sum).
            IntegrityError: the bytes do not match (``dest`` is removed).
            StoreUnavailable: the backend cannot be reached.
        """
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
        with scratch_dir("get-") as folder:
            return self.download(key, folder / "object", sha256).read_bytes()

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
    def open_stream(self, key: str, sha256: str | None = None) -> Iterator[VerifyingReader]:
        """An object's bytes as a stream, read as they arrive (nothing is copied first).

        The stream hashes what passes through it and raises IntegrityError when a read reaches
        the end of bytes that do not match, so bytes read before the end are unverified until
        then: read to the end (``VerifyingReader.drain``) before trusting what was read.

        Args:
            key: the object's key.
            sha256: the sum the bytes must have; default: the object's recorded sum (objects
                outside the layout may have none and are read unverified).

        Yields:
            The open stream; it is closed on leaving the context.

        Raises:
            ObjectNotFound: no such object, or an unfinished one (in the layout, no sum).
            IntegrityError: the object records another sum than ``sha256`` (before any read),
                or its bytes do not match (at the end).
            StoreUnavailable: the backend cannot be reached, before or while reading.
        """
        with self.transport.open_stream(_validate_key(key)) as (raw, recorded):
            if sha256 and recorded and recorded != sha256:
                raise IntegrityError(
                    f"object {key!r} records sha256 {recorded[:12]}…, expected {sha256[:12]}…",
                    key=key,
                )
            yield VerifyingReader(raw, sha256 or recorded, key)

    @contextlib.contextmanager
    def open_local(self, ref: ObjectRef | str) -> Iterator[Path]:
        """A readable local path for an object, verified; temporary for remote transports."""
        key = ref if isinstance(ref, str) else ref.key
        expected = None if isinstance(ref, str) else ref.sha256 or None
        in_place = self.transport.local_path(_validate_key(key))
        if in_place is not None:
            recorded = self.transport.stat(key)
            want = expected or (recorded.sha256 if recorded else None)
            if want is None and _in_layout(key):
                raise ObjectNotFound(f"object {key!r} has no recorded sha256", key=key)
            if want:
                state = in_place.stat()
                seen = (want, state.st_size, state.st_mtime_ns)
                if self._verified.get(key) != seen:
                    if file_sha256(in_place) != want:
                        raise IntegrityError(f"object {key!r} does not match its sha256", key=key)
                    self._verified[key] = seen
            yield in_place
            return
        with scratch_dir("obj-") as folder:
            yield self.download(key, folder / Path(key).name, expected)

    @contextlib.contextmanager
    def open_location(self, location: str) -> Iterator[Path]:
        """A readable local path for a local file, a URI of this store or a key (verified as
        ``open_local``): what a user names in an option."""
        if Path(location).is_file():
            yield Path(location)
            return
        key = self.key_from_uri(location) if "://" in location else location
        with self.open_local(key) as path:
            yield path

    # --- addressing ---------------------------------------------------------------------
    def uri(self, key: str) -> str:
        return self.transport.uri(_validate_key(key))

    def key_from_uri(self, uri: str) -> str:
        """Inverse of ``uri`` and ``prefix_uri``: the key (or folder prefix, ending in ``/``) of
        this store that ``uri`` names, or InvalidKey."""
        prefix = self.transport.uri("x")[:-1]
        if not uri.startswith(prefix):
            raise InvalidKey(f"{uri!r} is not an object of this store ({prefix}…)")
        key = uri[len(prefix) :]
        folder = key.endswith("/")
        return f"{_validate_key(key.removesuffix('/'))}/" if folder else _validate_key(key)

    def prefix_uri(self, prefix: str) -> str:
        """The URI of a folder of this store, ending in ``/`` (``key_from_uri`` inverts it)."""
        folder = _validate_key(prefix.rstrip("/"))
        return f"{self.transport.uri('x')[:-1]}{folder}/"

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.transport.presigned_url(_validate_key(key), expires)

    def describe(self) -> str:
        """Where the store is, for people (no credentials)."""
        parsed = urlparse(self.transport.uri("x"))
        if parsed.scheme == "file":
            return str(Path(parsed.path).parent)
        return f"s3://{parsed.netloc}"
