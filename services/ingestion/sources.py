"""Sources in, raw videos and metadata records out.

A source is a local file or folder, an http(s) URL, an ``s3://bucket/prefix`` or a manifest
(``.jsonl``/``.csv`` with columns ``url``, ``hashtag`` and optional platform metadata such as
``view_count``, ``allows_download``, ``description``). ``expand_source`` only lists items;
``ingest`` fetches one item, probes it, applies the metadata filters and stores the raw video
under its sha256 with a metadata JSON. Hostile input is bounded before it costs anything: a
download ends at its wall-clock deadline however slowly the server sends, frames larger than
``max_pixels`` are refused from the stream header before one is decoded, and local paths named
by a remote caller (the gRPC service) are refused outside ``allowed_roots`` before they are
looked at. Every failure is a typed ``H2AError`` so a batch can turn
it into a rejection record and go on: a manifest row that names no usable item (not JSON, not
UTF-8, a bad hashtag, ...) is still listed, as ``{manifest}:{line}`` with its ``problem``, and
``ingest`` rejects exactly that row. Error details show long or odd inputs cut short and
repr-escaped, so a 20 KB field never becomes a 20 KB rejection record.
"""

from __future__ import annotations

import csv
import dataclasses
import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import ParseResult, unquote, urljoin, urlparse

import av
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.config import StoreSettings
from services.common.errors import (
    DownloadFailed,
    FilteredOut,
    FrameTooLarge,
    InvalidSource,
    SourceNotAllowed,
    SourceNotFound,
    SourceTooLarge,
)
from services.common.records import ObjectRef
from services.common.scratch import scratch_dir
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
_MAX_HASHTAG = 100
# PATH_MAX on Linux; far longer than any real URL too.
_MAX_LOCATION = 4096
_SHOWN = 40
_LOCATION_SHOWN = 200
# What ``surrogateescape`` turns bytes that are not UTF-8 into; strict decoding never yields them.
_UNDECODED = re.compile("[\udc80-\udcff]")


class IngestSettings(BaseSettings):
    """Download limits and metadata filters (env ``H2A_INGEST_*``)."""

    model_config = SettingsConfigDict(env_prefix="H2A_INGEST_", extra="forbid")

    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """Largest source accepted, checked while streaming (Content-Length can lie)."""
    max_pixels: int = Field(default=7680 * 4320, ge=1)
    """Largest frame accepted, width times height (8K UHD by default), read from the stream
    header before any frame is decoded: a 250 KB image can hold 16000x16000 pixels."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Wall-clock limit of one download, connection included, however slowly bytes arrive."""
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
    allowed_roots: list[Path] = Field(default_factory=list)
    """Folders whose files a remote caller may name (a volume of videos mounted into the
    ingestion service); empty: none. A run in process (``h2a curate`` without ``--services``)
    reads any local path its user names."""


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One video to ingest, with what the platform said about it and how it was found."""

    location: str
    hashtag: str
    metadata: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    """Why the manifest row this stands for names no usable item; ``ingest`` rejects it."""


@dataclass(frozen=True, slots=True)
class IngestedVideo:
    """A stored source video: its content id, raw object, metadata object and probe record."""

    source_id: str
    raw: ObjectRef
    meta: ObjectRef
    info: VideoInfo
    item: SourceItem


# --- listing ------------------------------------------------------------------------------


def _short(text: str, limit: int = _SHOWN) -> str:
    """``text`` for an error detail: repr-escaped, so a newline shows as ``\\n``, and cut to about
    ``limit`` characters, so a 20 KB input never becomes a 20 KB detail."""
    escaped = repr(text[: limit + 1])
    if len(escaped) <= limit + 2:
        return escaped
    return f"{escaped[: limit + 1]}... ({len(text)} characters)"


def _where(location: str) -> str:
    return _short(location, _LOCATION_SHOWN)


def _os_reason(error: OSError) -> str:
    # Not str(error): it repeats the file name, which may be the 5,000-character problem itself.
    return error.strerror or type(error).__name__


def _unprintable(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in {"Cc", "Cs"}


def _parse(location: str) -> ParseResult:
    """``location`` parsed as a URL; raises InvalidSource for one that cannot be a source."""
    if not location:
        raise InvalidSource("no location (a manifest row without url?)")
    if len(location) > _MAX_LOCATION:
        raise InvalidSource(
            f"location of {len(location)} characters, over {_MAX_LOCATION}: {_where(location)}"
        )
    if any(unicodedata.category(char) in {"Cc", "Cs"} for char in location):
        raise InvalidSource(f"control character in location {_where(location)}")
    try:
        return urlparse(location)
    except ValueError as error:  # an unclosed "[" of an IPv6 host, say
        raise InvalidSource(f"not a valid URL ({error}): {_where(location)}") from None


def _scheme(location: str) -> str:
    parsed = _parse(location)
    # A one-letter scheme is a Windows drive, not a URL.
    return parsed.scheme.lower() if len(parsed.scheme) > 1 else ""


def _label(hashtag: str) -> str:
    """The label a hashtag names: surrounding whitespace and one leading ``#`` removed."""
    hashtag = hashtag.strip()
    return hashtag[1:] if hashtag.startswith("#") else hashtag


def _check_label(label: str) -> None:
    # A label becomes a class name and a path part: one short word, never a path.
    if not label:
        raise InvalidSource("no hashtag")
    if len(label) > _MAX_HASHTAG:
        raise InvalidSource(f"hashtag {_short(label)} is longer than {_MAX_HASHTAG} characters")
    if any(_unprintable(char) for char in label):
        raise InvalidSource(f"hashtag {_short(label)} contains whitespace or a control character")
    if label in {".", ".."} or any(char in label for char in "/\\"):
        raise InvalidSource(f"hashtag {_short(label)} is a path")


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


def _jsonl_rows(lines: Iterator[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if _UNDECODED.search(line):
            yield number, "not UTF-8"
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, f"not JSON ({error.msg})"
            continue
        except RecursionError:
            # The parser recurses once per nesting level: "[[[[..." is a bad row, not a crash.
            yield number, "JSON nested too deeply"
            continue
        yield number, row if isinstance(row, dict) else "a line must be a JSON object"


def _csv_rows(lines: Iterator[str], path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(lines)
    header: list[str] | None = None
    while True:
        # A quoted field can span lines: the row is numbered by the line it starts on.
        number = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # a field over the size limit, a stray carriage return
            yield number, f"not CSV ({error})"
            continue
        if not fields:
            continue
        if any(_UNDECODED.search(value) for value in fields):
            if header is None:
                raise InvalidSource(f"the header of {_where(str(path))} is not UTF-8")
            yield number, "not UTF-8"
        elif header is None:
            header = [name.strip() for name in fields]
        elif len(fields) > len(header):
            yield number, f"{len(fields)} fields, the header names {len(header)}"
        else:
            # A short row leaves its last columns out, as csv.DictReader does.
            yield number, dict(zip(header, fields, strict=False))


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Each row with its line number, or what is wrong with it instead of the row.

    utf-8-sig drops the BOM spreadsheet programs write, which would otherwise rename the first
    column; bytes that are not UTF-8 come through as surrogate escapes and make their row bad.
    """
    jsonl = path.suffix.lower() == ".jsonl"
    # JSON Lines are separated by "\n" alone; CSV takes any line ending, as csv wants.
    with open(
        path, encoding="utf-8-sig", errors="surrogateescape", newline="\n" if jsonl else ""
    ) as handle:
        yield from _jsonl_rows(handle) if jsonl else _csv_rows(handle, path)


def _row_item(row: dict[str, Any], manifest: Path) -> SourceItem:
    location = row.get("url") or row.get("location") or ""
    hashtag = row.get("hashtag") or ""
    if not isinstance(location, str) or not isinstance(hashtag, str):
        raise InvalidSource("url and hashtag must be strings")
    location = location.strip()
    if location and not _scheme(location) and not Path(location).is_absolute():
        # Relative paths are relative to the manifest, as people write them.
        location = str(manifest.parent / location)
    _parse(location)
    label = _label(hashtag)
    _check_label(label)
    metadata = {
        key: _coerce(key, value)
        for key, value in row.items()
        if key not in {"url", "location", "hashtag"} and value not in (None, "")
    }
    return SourceItem(location, label, metadata)


def _from_manifest(path: Path) -> list[SourceItem]:
    items = []
    for number, row in _manifest_rows(path):
        try:
            if isinstance(row, str):
                raise InvalidSource(row)
            items.append(_row_item(row, path))
        except InvalidSource as error:
            # The row's own fields stay out: they are what is wrong, and may be huge.
            problem = f"{path.name}:{number}: {error.detail}"
            items.append(SourceItem(f"{path}:{number}", "", {}, problem=problem))
    return items


def _from_folder(folder: Path, hashtag: str | None) -> list[SourceItem]:
    items = []
    for found in sorted(folder.rglob("*")):
        if found.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        try:
            if not found.is_file():
                continue
        except OSError:
            pass  # still an item: ingest records why this one cannot be read
        items.append(SourceItem(str(found), hashtag or _label(found.parent.name), {}))
    return items


def _from_s3(source: str, hashtag: str | None) -> list[SourceItem]:
    parsed = urlparse(source)
    store = _s3_store(parsed.netloc)
    prefix = parsed.path.lstrip("/")
    return [
        SourceItem(
            f"s3://{parsed.netloc}/{key}", hashtag or _label(PurePosixPath(key).parent.name), {}
        )
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
        row becomes one rejection, not a failed batch: a manifest row that names no item is
        listed as ``{manifest}:{line}`` with its ``problem``.

    Raises:
        SourceNotFound: a local source that does not exist.
        InvalidSource: an unsupported scheme, an unreadable manifest (or one whose header is not
            UTF-8), a path the system refuses to look at, or an invalid ``hashtag``.
    """
    scheme = _scheme(source)
    if hashtag:
        hashtag = _label(hashtag)
        _check_label(hashtag)
    if scheme in {"http", "https"}:
        return [SourceItem(source, hashtag or "unlabelled", {})]
    if scheme == "s3":
        return _from_s3(source, hashtag)
    if scheme not in {"", "file"}:
        raise InvalidSource(f"unsupported source scheme {_short(scheme)} in {_where(source)}")
    path = Path(unquote(urlparse(source).path) if scheme == "file" else source)
    try:
        if path.suffix.lower() in _MANIFEST_SUFFIXES and path.is_file():
            return _from_manifest(path)
        if path.is_dir():
            return _from_folder(path, hashtag)
        exists = path.exists()
    except OSError as error:  # a name too long, a folder we may not enter
        raise InvalidSource(f"cannot read source {_where(source)}: {_os_reason(error)}") from None
    if not exists and not path.suffix:
        raise SourceNotFound(f"source {_where(source)} does not exist")
    # A missing file with a name stays an item: ingest rejects it like any unreadable one.
    return [SourceItem(str(path), hashtag or _label(path.parent.name), {})]


# --- fetching -----------------------------------------------------------------------------


def _s3_store(bucket: str) -> ClipStore:
    # Foreign buckets are read with the store's endpoint and credentials, never created.
    settings = StoreSettings().model_copy(
        update={"backend": "s3", "bucket": bucket, "create_bucket": False}
    )
    return ClipStore(S3Transport(settings))


def _check_item(item: SourceItem) -> SourceItem:
    """The item with its hashtag normalised; raises InvalidSource for one that is not usable."""
    if item.problem:
        raise InvalidSource(item.problem)
    parsed = _parse(item.location)
    path = parsed.path if _scheme(item.location) else item.location
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        raise InvalidSource(f"path traversal in source {_where(item.location)}")
    label = _label(item.hashtag)
    try:
        _check_label(label)
    except InvalidSource as error:
        raise InvalidSource(f"{error.detail}, for {_where(item.location)}") from None
    return item if label == item.hashtag else dataclasses.replace(item, hashtag=label)


def _check_host(url: str, settings: IngestSettings, first_hop: bool) -> None:
    parsed = _parse(url)
    if parsed.scheme not in {"http", "https"}:
        raise InvalidSource(f"refusing a non-http(s) URL: {_where(url)}")
    host = parsed.hostname
    if not host:
        raise InvalidSource(f"URL has no host: {_where(url)}")
    try:
        port = parsed.port
    except ValueError as error:  # not a number, or over 65535
        raise InvalidSource(f"{error}: {_where(url)}") from None
    if settings.allow_private_networks or (first_hop and host in settings.allowed_hosts):
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port or 443)}
    except UnicodeError:  # IDNA refuses the name: a label over 63 characters, say
        raise InvalidSource(f"invalid host name {_short(host)}") from None
    except socket.gaierror as error:
        raise DownloadFailed(f"cannot resolve {_short(host)}: {error}") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            hop = "URL" if first_hop else "redirect"
            raise InvalidSource(
                f"{hop} to a non-public address refused: {_short(host)} -> {ip}", url=url
            )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Redirects are followed by hand so every hop's address is checked before connecting.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Watchdog:
    """Shuts every socket of one download when its deadline passes.

    A socket timeout bounds one read only: a server that drips a few bytes at a time (headers
    or body) passes each such check and holds the download for as long as it likes. A socket
    shut from this timer's thread wakes the read blocked on it, whatever it is reading.
    """

    def __init__(self, timeout_s: float) -> None:
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.expired = False
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # The plain socket's shutdown, not SSLSocket's: that one also drops the SSL object,
        # which the read blocked in another thread is still using.
        with suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class _Watched:
    """A connection that hands its socket to the download's watchdog once connected."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]  # the http.client connection it is mixed into
        self._watchdog.watch(self.sock)  # type: ignore[attr-defined]


class _WatchedHTTP(_Watched, http.client.HTTPConnection):
    pass


class _WatchedHTTPS(_Watched, http.client.HTTPSConnection):
    pass


class _WatchedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """http and https through watched connections (replaces urllib's default handlers)."""

    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedHTTP, req, watchdog=self._watchdog)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedHTTPS, req, context=self._context, watchdog=self._watchdog)


def _overdue(url: str, settings: IngestSettings) -> DownloadFailed:
    return DownloadFailed(f"download exceeded {settings.timeout_s} s: {_where(url)}")


def download(url: str, dest: Path, settings: IngestSettings) -> None:
    """GET ``url`` into ``dest`` within the size and time limits, following redirects by hand so
    that no hop reaches a private or loopback address (unless the settings allow it).

    The time limit is wall-clock from the first connection to the last byte, whatever the
    server's pace: at the deadline the connection is shut.

    Raises:
        InvalidSource: not http(s), or a hop to a non-public address.
        SourceNotFound: HTTP 404/410.
        SourceTooLarge: over ``max_bytes``.
        DownloadFailed: any other HTTP error, a refused connection, the time limit.
    """
    deadline = time.monotonic() + settings.timeout_s
    watchdog = _Watchdog(settings.timeout_s)
    opener = urllib.request.build_opener(_NoRedirect, _WatchedHandler(watchdog))
    try:
        for hop in range(_MAX_REDIRECTS + 1):
            _check_host(url, settings, first_hop=hop == 0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _overdue(url, settings)
            request = urllib.request.Request(url, headers={"User-Agent": "hashtag2action"})
            try:
                response = opener.open(request, timeout=remaining)
            except urllib.error.HTTPError as error:
                if error.code in {301, 302, 303, 307, 308} and error.headers.get("Location"):
                    url = urljoin(url, error.headers["Location"])
                    error.close()
                    continue
                error.close()
                if error.code in {404, 410}:
                    raise SourceNotFound(
                        f"HTTP {error.code} for {_where(url)}", status=error.code
                    ) from None
                raise DownloadFailed(
                    f"HTTP {error.code} for {_where(url)}", status=error.code
                ) from None
            except UnicodeError:  # IDNA refuses the name (reached with private networks allowed)
                raise InvalidSource(f"invalid host name in {_where(url)}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                if watchdog.expired:
                    raise _overdue(url, settings) from None
                reason = getattr(error, "reason", error)
                raise DownloadFailed(f"cannot fetch {_where(url)}: {reason}") from None
            with response:
                _stream(response, dest, settings, watchdog, url)
            return
    finally:
        watchdog.cancel()
    raise DownloadFailed(f"more than {_MAX_REDIRECTS} redirects from {_where(url)}")


def _stream(
    response: Any, dest: Path, settings: IngestSettings, watchdog: _Watchdog, url: str
) -> None:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > settings.max_bytes:
        raise SourceTooLarge(f"{_where(url)} declares {declared} bytes, limit {settings.max_bytes}")
    received = 0
    try:
        with open(dest, "wb") as handle:
            while block := response.read(_CHUNK):
                received += len(block)
                if received > settings.max_bytes:
                    raise SourceTooLarge(f"{_where(url)} exceeds {settings.max_bytes} bytes")
                handle.write(block)
    except (OSError, http.client.HTTPException) as error:
        if watchdog.expired:
            raise _overdue(url, settings) from None
        raise DownloadFailed(f"download of {_where(url)} broke off: {error}") from None
    # A body that ends with the connection reads as complete when the watchdog shut it.
    if watchdog.expired:
        raise _overdue(url, settings)


def _check_allowed(path: Path, settings: IngestSettings) -> None:
    """Refuse a local path that a remote caller named outside ``allowed_roots``.

    Decided before the file is looked at, the same whether it exists, so the caller learns
    nothing about what lies outside. The path is resolved first: a symbolic link under a root
    that points out of it is outside.
    """
    resolved = Path(os.path.realpath(path))
    if not any(resolved.is_relative_to(os.path.realpath(root)) for root in settings.allowed_roots):
        raise SourceNotAllowed(
            f"local path {_where(str(path))} is outside the folders this service may read"
        )


@contextmanager
def _fetched(item: SourceItem, settings: IngestSettings, remote: bool) -> Iterator[Path]:
    """A local path holding the item's bytes (the file itself for local sources)."""
    scheme = _scheme(item.location)
    if scheme in {"", "file"}:
        path = Path(unquote(urlparse(item.location).path) if scheme == "file" else item.location)
        if remote:
            _check_allowed(path, settings)
        try:
            if not path.is_file():
                raise SourceNotFound(f"no such file: {_where(str(path))}")
            # Opened once here so that a file we may not read is rejected as such, typed.
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
        except OSError as error:  # a name too long, a folder or file we may not read
            raise InvalidSource(f"cannot read {_where(str(path))}: {_os_reason(error)}") from None
        if size > settings.max_bytes:
            raise SourceTooLarge(f"{_where(path.name)} exceeds {settings.max_bytes} bytes")
        yield path
        return
    with scratch_dir("ingest") as folder:
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
                raise SourceNotFound(f"no object {_where(item.location)}")
            if found.size > settings.max_bytes:
                raise SourceTooLarge(f"{_where(item.location)} exceeds {settings.max_bytes} bytes")
            store.download(key, local)
        else:
            raise InvalidSource(
                f"unsupported source scheme {_short(scheme)} in {_where(item.location)}"
            )
        yield local


# --- filters and storing ------------------------------------------------------------------


def _check_frame_size(path: Path, name: str, max_pixels: int) -> None:
    """Refuse frames over ``max_pixels``, read from the stream header before one is decoded.

    Opening a stream whose header does not give all FFmpeg needs (an image renamed ``.mp4``, a
    PNG track in a mov) makes it decode a frame; ``max_pixels`` bounds that decoder too, which
    then leaves the size unknown. A file that is no video with a readable header is left for
    ``probe`` to name.
    """
    try:
        with av.open(str(path), options={"max_pixels": str(max_pixels)}) as container:
            if not container.streams.video:
                return
            header = container.streams.video[0].codec_context
            width, height = header.width, header.height
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        return
    if width * height == 0:
        raise FrameTooLarge(
            f"{name}: no frame size found within the limit of {max_pixels} pixels (the first "
            "frame is larger, or does not decode)"
        )
    if width * height > max_pixels:
        raise FrameTooLarge(
            f"{name}: {width}x{height} frames, over the limit of {max_pixels} pixels",
            width=width,
            height=height,
        )


def _filter(info: VideoInfo, item: SourceItem, settings: IngestSettings) -> None:
    name = _where(PurePosixPath(item.location).name)
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


def ingest(
    item: SourceItem, store: ClipStore, settings: IngestSettings, remote: bool = False
) -> IngestedVideo:
    """Fetch, probe, filter and store one source video.

    Args:
        item: what to fetch and its platform metadata.
        store: where ``raw/{sha256}{ext}`` and ``meta/{source_id}.json`` go.
        settings: download limits and metadata filters.
        remote: the item comes from another machine's caller (the gRPC service): a local path
            must lie under ``settings.allowed_roots``.

    Returns:
        The stored video; ``source_id`` is the sha256 of its bytes, so the same video found
        twice (two hashtags, two runs) is one source.

    Raises:
        InvalidSource: the item's ``problem`` (a bad manifest row), an unusable location or
            hashtag.
        SourceNotAllowed: ``remote`` and a local path outside the allowed roots.
        InvalidSource, SourceNotFound, DownloadFailed, SourceTooLarge: fetching failed.
        FrameTooLarge: frames over ``settings.max_pixels``, or of a size the header hides.
        UnreadableVideo, NoVideoStream: not a decodable video.
        FilteredOut: a metadata filter rejected it.
    """
    item = _check_item(item)
    with _fetched(item, settings, remote) as local:
        sha256 = file_sha256(local)
        _check_frame_size(local, _where(PurePosixPath(item.location).name), settings.max_pixels)
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
