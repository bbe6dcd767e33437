"""Media download for collected videos, behind one small protocol.

Plain HTTP is the default and needs nothing but the standard library; it suits direct media URLs
(a CDN link, a mirror, the test server). Platform page URLs (``https://www.tiktok.com/@user/video/
id``) need a site-aware extractor: when the user has installed ``yt-dlp`` it is used. We detect
it and never install it: whether to use it is the user's decision under the platform's terms.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol
from urllib.parse import urlparse

from services.common.errors import ConfigError, DownloadFailed
from services.ingestion.sources import IngestSettings, download

__all__ = ["Downloader", "HttpDownloader", "YtDlpDownloader", "select_downloader"]

_logger = logging.getLogger(__name__)


class Downloader(Protocol):
    """Fetches one video into a folder and returns the local file."""

    name: str

    def fetch(self, url: str, dest_dir: Path) -> Path: ...


class HttpDownloader:
    """GET the URL with the ingestion downloader (size and time limits, every redirect hop
    checked against private addresses); files are named by a hash of the URL, so a re-run
    reuses them."""

    name = "http"

    def __init__(self, settings: IngestSettings | None = None) -> None:
        self.settings = settings or IngestSettings()

    def fetch(self, url: str, dest_dir: Path) -> Path:
        suffix = PurePosixPath(urlparse(url).path).suffix.lower()[:9] or ".mp4"
        dest = Path(dest_dir) / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}{suffix}"
        if dest.is_file():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_suffix(dest.suffix + ".part")
        try:
            download(url, partial, self.settings)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest


class YtDlpDownloader:
    """Site-aware download through the user's own ``yt-dlp`` installation."""

    name = "yt-dlp"

    def fetch(self, url: str, dest_dir: Path) -> Path:
        import yt_dlp

        options = {
            "outtmpl": str(Path(dest_dir) / "%(id)s.%(ext)s"),
            "quiet": True,
            "noprogress": True,
            "format": "mp4/best",
        }
        try:
            with yt_dlp.YoutubeDL(options) as client:
                info = client.extract_info(url, download=True)
                return Path(client.prepare_filename(info))
        except yt_dlp.utils.DownloadError as error:
            raise DownloadFailed(f"yt-dlp could not fetch {url}: {error}") from error


def select_downloader(name: Literal["auto", "http", "yt-dlp"] = "auto") -> Downloader:
    """The downloader to use: ``auto`` picks yt-dlp when it is importable, else plain HTTP."""
    has_ytdlp = importlib.util.find_spec("yt_dlp") is not None
    if name == "yt-dlp" and not has_ytdlp:
        raise ConfigError("downloader 'yt-dlp' asked for but yt_dlp is not installed")
    if name == "yt-dlp" or (name == "auto" and has_ytdlp):
        return YtDlpDownloader()
    if name in ("auto", "http"):
        return HttpDownloader()
    raise ConfigError(f"downloader must be auto, http or yt-dlp; got {name!r}")
