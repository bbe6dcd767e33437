"""Sources in, raw videos and metadata records out.

A source is a local file or folder, an http(s) URL, an ``s3://bucket/prefix`` or a manifest
(``.jsonl``/``.csv`` with columns ``url``, ``hashtag`` and optional platform metadata such as
``view_count``, ``allows_download``, ``description``). ``expand_source`` only lists items;
``ingest`` fetches one item, probes it, applies the metadata filters and stores the raw video
under its sha256 with a metadata JSON. Every failure is a typed ``H2AError`` so a batch can turn
it into a rejection record and go on.
"""

from __future__ import annotations

import csv
import dataclasses
import http.client
import ipaddress
import json
import logging
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.config import StoreSettings
from services.common.errors import (
    DownloadFailed,
    FilteredOut,
    InvalidSource,
    SourceNotFound,
    SourceTooLarge,
)
from services.common.records import ObjectRef
from services.common.store import ClipStore, S3Transport, file_sha256
from services.common.video import VideoInfo, probe

__all__ = [
    "IngestSettings",
    "IngestedVideo",
    "SourceItem",
    "download",
    "expand_source",
    "ingest",
]

_logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
_MANIFEST_SUFFIXES = frozenset({".jsonl", ".csv"})
_MAX_REDIRECTS = 5
_CHUNK = 1 << 16


class IngestSettings(BaseSettings):
    """Download limits and metadata filters (env ``H2A_INGEST_*``)."""

    model_config = SettingsConfigDict(env_prefix="H2A_INGEST_", extra="forbid")

    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """Largest source accepted, checked while streaming (Content-Length can lie)."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Wall-clock limit of one download, connection included."""
    min_duration_s: float = Field(default=1.0, ge=0)
    max_duration_s: float = Field(default=600.0, gt=0)
    min_short_side: int = Field(default=112, ge=0)
    min_views: int = Field(default=0, ge=0)
    """Applies to items whose metadata carries ``view_count``."""
    require_download_permission: bool = True
    """Reject items whose metadata says ``allows_download: false`` (the paper's rule)."""
    allow_private_networks: bool = False
    """Allow URLs (and redirects) to loopback, private and link-local addresses."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names exempt from the private-network rule (an in-cluster mirror, say); their
    redirects to other private hosts are still refused."""


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One video to ingest, with what the platform said about it and how it was found."""

    location: str
    hashtag: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IngestedVideo:
    """A stored source video: its content id, raw object, metadata object and probe record."""

    source_id: str
    raw: ObjectRef
    meta: ObjectRef
    info: VideoInfo
    item: SourceItem


# --- listing ------------------------------------------------------------------------------


def _scheme(location: str) -> str:
    parsed = urlparse(location)
    # A one-letter scheme is a Windows drive, not a URL.
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else ""


def _coerce(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if key == "view_count" and text:
        try:
            return int(float(text))
        except ValueError:
            return text
    if key == "allows_download" and text.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return text.lower() in {"true", "1", "yes"}
    return text


def _manifest_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InvalidSource(f"{path.name}:{number}: not JSON ({error.msg})") from None
                if not isinstance(row, dict):
                    raise InvalidSource(f"{path.name}:{number}: a line must be a JSON object")
                yield row
    else:
        with open(path, encoding="utf-8", newline="") as handle:
            yield from csv.DictReader(handle)


def _from_manifest(path: Path) -> list[SourceItem]:
    items = []
    for row in _manifest_rows(path):
        location = str(row.get("url") or row.get("location") or "").strip()
        if location and not _scheme(location) and not Path(location).is_absolute():
            # Relative paths are relative to the manifest, as people write them.
            location = str(path.parent / location)
        metadata = {
            key: _coerce(key, value)
            for key, value in row.items()
            if key not in {"url", "location", "hashtag"} and value not in (None, "")
        }
        items.append(SourceItem(location, str(row.get("hashtag") or "").strip(), metadata))
    return items


def _from_s3(source: str, hashtag: str | None) -> list[SourceItem]:
    parsed = urlparse(source)
    store = _s3_store(parsed.netloc)
    prefix = parsed.path.lstrip("/")
    return [
        SourceItem(f"s3://{parsed.netloc}/{key}", hashtag or PurePosixPath(key).parent.name, {})
        for key in store.list(prefix)
        if PurePosixPath(key).suffix.lower() in VIDEO_SUFFIXES
    ]


def expand_source(source: str, hashtag: str | None = None) -> list[SourceItem]:
    """List the videos a source names, without fetching them.

    Args:
        source: a local file or folder, an http(s) URL, ``s3://bucket/prefix`` or a manifest.
        hashtag: the hashtag of items that are not manifest rows; by default a file's parent
            folder name (so ``videos/dance/a.mp4`` is ``dance``), ``unlabelled`` for a URL.

    Returns:
        The items in a stable order. Validation of each item waits for ``ingest`` so one bad
        row becomes one rejection, not a failed batch.

    Raises:
        SourceNotFound: a local source that does not exist.
        InvalidSource: an unsupported scheme or an unreadable manifest.
    """
    scheme = _scheme(source)
    if scheme in {"http", "https"}:
        return [SourceItem(source, hashtag or "unlabelled", {})]
    if scheme == "s3":
        return _from_s3(source, hashtag)
    if scheme not in {"", "file"}:
        raise InvalidSource(f"unsupported source scheme {scheme!r} in {source}")
    path = Path(unquote(urlparse(source).path) if scheme == "file" else source)
    if path.suffix.lower() in _MANIFEST_SUFFIXES and path.is_file():
        return _from_manifest(path)
    if path.is_dir():
        return [
            SourceItem(str(found), hashtag or found.parent.name, {})
            for found in sorted(path.rglob("*"))
            if found.is_file() and found.suffix.lower() in VIDEO_SUFFIXES
        ]
    if not path.exists() and not path.suffix:
        raise SourceNotFound(f"source {source} does not exist")
    # A missing file with a name stays an item: ingest rejects it like any unreadable one.
    return [SourceItem(str(path), hashtag or path.parent.name, {})]


# --- fetching -----------------------------------------------------------------------------


def _s3_store(bucket: str) -> ClipStore:
    # Foreign buckets are read with the store's endpoint and credentials, never created.
    settings = StoreSettings().model_copy(
        update={"backend": "s3", "bucket": bucket, "create_bucket": False}
    )
    return ClipStore(S3Transport(settings))


def _check_item(item: SourceItem) -> None:
    if not item.location:
        raise InvalidSource("a source item has no location (a manifest row without url?)")
    parsed = urlparse(item.location)
    path = parsed.path if _scheme(item.location) else item.location
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        raise InvalidSource(f"path traversal in source {item.location!r}")
    tag = item.hashtag
    if not tag or len(tag) > 100 or any(c in tag for c in "/\\\0") or tag in {".", ".."}:
        raise InvalidSource(f"invalid hashtag {tag!r} for {item.location}")


def _check_host(url: str, settings: IngestSettings, first_hop: bool) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in {"http", "https"}:
        raise InvalidSource(f"refusing a non-http(s) URL: {url}")
    host = parsed.hostname
    if not host:
        raise InvalidSource(f"URL has no host: {url}")
    if settings.allow_private_networks or (first_hop and host in settings.allowed_hosts):
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parsed.port or 443)}
    except socket.gaierror as error:
        raise DownloadFailed(f"cannot resolve {host}: {error}") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            hop = "URL" if first_hop else "redirect"
            raise InvalidSource(f"{hop} to a non-public address refused: {host} -> {ip}", url=url)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Redirects are followed by hand so every hop's address is checked before connecting.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def download(url: str, dest: Path, settings: IngestSettings) -> None:
    """GET ``url`` into ``dest`` within the size and time limits, following redirects by hand so
    that no hop reaches a private or loopback address (unless the settings allow it).

    Raises:
        InvalidSource: not http(s), or a hop to a non-public address.
        SourceNotFound: HTTP 404/410.
        SourceTooLarge: over ``max_bytes``.
        DownloadFailed: any other HTTP error, a refused connection, the time limit.
    """
    deadline = time.monotonic() + settings.timeout_s
    for hop in range(_MAX_REDIRECTS + 1):
        _check_host(url, settings, first_hop=hop == 0)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DownloadFailed(f"download exceeded {settings.timeout_s} s: {url}")
        request = urllib.request.Request(url, headers={"User-Agent": "hashtag2action"})
        try:
            response = _opener.open(request, timeout=remaining)
        except urllib.error.HTTPError as error:
            if error.code in {301, 302, 303, 307, 308} and error.headers.get("Location"):
                url = urljoin(url, error.headers["Location"])
                error.close()
                continue
            error.close()
            if error.code in {404, 410}:
                raise SourceNotFound(f"HTTP {error.code} for {url}", status=error.code) from None
            raise DownloadFailed(f"HTTP {error.code} for {url}", status=error.code) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise DownloadFailed(f"cannot fetch {url}: {reason}") from None
        with response:
            _stream(response, dest, settings, deadline, url)
        return
    raise DownloadFailed(f"more than {_MAX_REDIRECTS} redirects from {url}")


def _stream(response: Any, dest: Path, settings: IngestSettings, deadline: float, url: str) -> None:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > settings.max_bytes:
        raise SourceTooLarge(f"{url} declares {declared} bytes, limit {settings.max_bytes}")
    received = 0
    try:
        with open(dest, "wb") as handle:
            while block := response.read(_CHUNK):
                received += len(block)
                if received > settings.max_bytes:
                    raise SourceTooLarge(f"{url} exceeds {settings.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise DownloadFailed(f"download exceeded {settings.timeout_s} s: {url}")
                handle.write(block)
    except (OSError, http.client.HTTPException) as error:
        raise DownloadFailed(f"download of {url} broke off: {error}") from None


@contextmanager
def _fetched(item: SourceItem, settings: IngestSettings) -> Iterator[Path]:
    """A local path holding the item's bytes (the file itself for local sources)."""
    scheme = _scheme(item.location)
    if scheme in {"", "file"}:
        path = Path(unquote(urlparse(item.location).path) if scheme == "file" else item.location)
        if not path.is_file():
            raise SourceNotFound(f"no such file: {path}")
        if path.stat().st_size > settings.max_bytes:
            raise SourceTooLarge(f"{path.name} exceeds {settings.max_bytes} bytes")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="h2a-ingest-") as folder:
        # Only the extension of the remote name is kept: names can be long or odd.
        suffix = PurePosixPath(unquote(urlparse(item.location).path)).suffix[:9]
        local = Path(folder) / f"source{suffix}"
        if scheme in {"http", "https"}:
            download(item.location, local, settings)
        elif scheme == "s3":
            parsed = urlparse(item.location)
            store = _s3_store(parsed.netloc)
            key = parsed.path.lstrip("/")
            found = store.stat(key)
            if found is None:
                raise SourceNotFound(f"no object {item.location}")
            if found.size > settings.max_bytes:
                raise SourceTooLarge(f"{item.location} exceeds {settings.max_bytes} bytes")
            store.download(key, local)
        else:
            raise InvalidSource(f"unsupported source scheme {scheme!r} in {item.location}")
        yield local


# --- filters and storing ------------------------------------------------------------------


def _filter(info: VideoInfo, item: SourceItem, settings: IngestSettings) -> None:
    name = PurePosixPath(item.location).name
    if not settings.min_duration_s <= info.duration_s <= settings.max_duration_s:
        raise FilteredOut(
            f"{name}: duration {info.duration_s:.2f} s outside "
            f"[{settings.min_duration_s}, {settings.max_duration_s}] s",
            filter="duration",
        )
    if info.short_side < settings.min_short_side:
        raise FilteredOut(
            f"{name}: short side {info.short_side} px below {settings.min_short_side} px",
            filter="resolution",
        )
    if settings.require_download_permission and item.metadata.get("allows_download") is False:
        raise FilteredOut(f"{name}: the owner does not allow download", filter="permission")
    views = item.metadata.get("view_count")
    if isinstance(views, int) and views < settings.min_views:
        raise FilteredOut(f"{name}: {views} views below {settings.min_views}", filter="views")


def ingest(item: SourceItem, store: ClipStore, settings: IngestSettings) -> IngestedVideo:
    """Fetch, probe, filter and store one source video.

    Args:
        item: what to fetch and its platform metadata.
        store: where ``raw/{sha256}{ext}`` and ``meta/{source_id}.json`` go.
        settings: download limits and metadata filters.

    Returns:
        The stored video; ``source_id`` is the sha256 of its bytes, so the same video found
        twice (two hashtags, two runs) is one source.

    Raises:
        InvalidSource, SourceNotFound, DownloadFailed, SourceTooLarge: fetching failed.
        UnreadableVideo, NoVideoStream: not a decodable video.
        FilteredOut: a metadata filter rejected it.
    """
    _check_item(item)
    with _fetched(item, settings) as local:
        sha256 = file_sha256(local)
        info = probe(local)
        _filter(info, item, settings)
        raw = store.put_file(ClipStore.raw_key(sha256, local.suffix), local)
    info = dataclasses.replace(info, path=raw.uri)
    record = {
        "source_id": sha256,
        "location": item.location,
        "hashtag": item.hashtag,
        "metadata": item.metadata,
        "probe": dataclasses.asdict(info),
        "raw": dataclasses.asdict(raw),
    }
    # No timestamp in the record: re-ingesting the same item rewrites identical bytes (a no-op).
    meta = store.put_json(ClipStore.meta_key(sha256), record)
    _logger.info(
        "ingested", extra={"source_id": sha256, "stage": "ingestion", "location": item.location}
    )
    return IngestedVideo(source_id=sha256, raw=raw, meta=meta, info=info, item=item)
