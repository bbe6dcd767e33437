"""Collection through the platform's official research API (seed paper section 3.3, ethics 8).

The client follows the documented shapes of the TikTok Research API:

* ``POST {base}/v2/oauth/token/`` (form: client_key, client_secret,
  grant_type=client_credentials) -> ``{access_token, expires_in, token_type}``;
* ``POST {base}/v2/research/video/query/?fields=...`` with a JSON body ``{query: {and: [...]},
  start_date, end_date, max_count, cursor, search_id}`` -> ``{data: {videos, cursor, has_more,
  search_id}, error: {code, message, log_id}}``. A query window spans at most 30 days and a page
  at most 100 videos; the platform counts requests against a daily quota.

Download permission: the query asks for one more per-video field, ``allows_download`` (the
owner's download setting, which the paper required). A video is kept only when it is ``true``;
``false`` and a missing field are counted apart (``download_not_allowed``,
``download_permission_unknown``), so a platform that does not return the field yields an empty
manifest rather than videos nobody allowed.

Collection is resumable: after each page the kept videos of a hashtag
(``state/collect/{run}/{tag}.jsonl``) and then the cursor state (``state/collect/{run}.json``:
window, cursor, search id, counts, quota used today) are written to the clip store, so a run
stopped by ``QuotaExceeded`` or a crash continues at the next page, never re-fetching one.
Credentials come from the environment or a mounted secret and are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.collection.downloader import Downloader
from services.collection.planning import HashtagPlan, PlannedTag
from services.common.errors import (
    ConfigError,
    DownloadFailed,
    H2AError,
    InvalidSource,
    QuotaExceeded,
    SourceNotFound,
    SourceTooLarge,
)
from services.common.records import utc_now
from services.common.store import ClipStore

__all__ = [
    "VIDEO_FIELDS",
    "CollectSummary",
    "MalformedResponse",
    "Quota",
    "ResearchApiError",
    "ResearchClient",
    "ResearchSettings",
    "collect",
    "measure_views",
]

_logger = logging.getLogger(__name__)

VIDEO_FIELDS = (
    "id", "video_description", "create_time", "region_code", "share_count", "view_count",
    "like_count", "comment_count", "hashtag_names", "username", "voice_to_text",
    "video_duration", "allows_download",
)  # fmt: skip
_TOKEN_PATH = "/v2/oauth/token/"
_QUERY_PATH = "/v2/research/video/query/"


class ResearchApiError(H2AError):
    """The research API refused a request or kept failing after the bounded retries."""

    reason = "RESEARCH_API_ERROR"
    grpc_status = "UNAVAILABLE"


class MalformedResponse(ResearchApiError):
    """The API answered with something that is not the documented JSON."""

    reason = "RESEARCH_API_MALFORMED"
    grpc_status = "DATA_LOSS"


class ResearchSettings(BaseSettings):
    """How to reach the research API; env ``H2A_RESEARCH_*``.

    Credentials: ``H2A_RESEARCH_CLIENT_KEY`` / ``H2A_RESEARCH_CLIENT_SECRET``, or a mounted
    secret folder (``secret_dir``) holding files ``client_key`` and ``client_secret``.
    """

    model_config = SettingsConfigDict(env_prefix="H2A_RESEARCH_", extra="forbid")

    base_url: str = "https://open.tiktokapis.com"
    client_key: SecretStr | None = None
    client_secret: SecretStr | None = None
    secret_dir: Path | None = None
    """A mounted Kubernetes secret; its files override the two keys above."""
    region_codes: list[str] = Field(default_factory=list)
    """Restrict queries to these regions (``["US", "GB"]``); empty means every region."""
    window_days: int = Field(default=30, ge=1, le=30)
    """Days per query window; the API refuses windows longer than 30 days."""
    max_windows: int = Field(default=12, ge=1)
    """How far back to slide (windows) before giving up on a hashtag's target."""
    end_date: date | None = None
    """Last day of the newest window; default: today (UTC) when a run starts."""
    max_count: int = Field(default=100, ge=1, le=100)
    daily_quota: int = Field(default=1000, ge=1)
    """Query requests allowed per UTC day (the platform's default quota is 1000)."""
    min_interval_s: float = Field(default=1.0, ge=0)
    """Rate limit: at least this long between two requests."""
    max_retries: int = Field(default=5, ge=0)
    """Retries after a 429, a 5xx or a connection error, with exponential backoff."""
    backoff_base_s: float = Field(default=2.0, ge=0)
    backoff_max_s: float = Field(default=120.0, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    token_margin_s: float = Field(default=60.0, ge=0)
    """Refresh the access token this long before it expires."""
    video_url_template: str = "https://www.tiktok.com/@{username}/video/{id}"


def _credentials(settings: ResearchSettings) -> tuple[str, str]:
    key = settings.client_key.get_secret_value() if settings.client_key else None
    secret = settings.client_secret.get_secret_value() if settings.client_secret else None
    if settings.secret_dir is not None:
        folder = Path(settings.secret_dir)
        if not (folder / "client_key").is_file() or not (folder / "client_secret").is_file():
            raise ConfigError(f"research secret_dir {folder} lacks client_key/client_secret files")
        key = (folder / "client_key").read_text().strip()
        secret = (folder / "client_secret").read_text().strip()
    if not key or not secret:
        raise ConfigError(
            "research API credentials missing: set H2A_RESEARCH_CLIENT_KEY and "
            "H2A_RESEARCH_CLIENT_SECRET, or H2A_RESEARCH_SECRET_DIR"
        )
    return key, secret


@dataclass(slots=True)
class Quota:
    """Query requests spent on one UTC day; restored from and saved to the run state."""

    limit: int
    day: str = ""
    used: int = 0

    def spend(self) -> None:
        today = datetime.now(UTC).date().isoformat()
        if self.day != today:
            self.day, self.used = today, 0
        if self.used >= self.limit:
            raise QuotaExceeded(f"daily research API quota of {self.limit} requests is spent")
        self.used += 1


class ResearchClient:
    """One authenticated session with the research API: token, rate limit, retries, quota."""

    def __init__(
        self,
        settings: ResearchSettings,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.quota = Quota(settings.daily_quota)
        self._clock = clock
        self._sleep = sleep
        self._credentials = _credentials(settings)
        self._token: str | None = None
        self._token_expires = 0.0
        self._last_request: float | None = None
        self.token_refreshes = 0
        self.requests = 0

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._last_request is not None:
            self._sleep(max(0.0, self._last_request + self.settings.min_interval_s - self._clock()))
        self._last_request = self._clock()
        request = urllib.request.Request(
            self.settings.base_url.rstrip("/") + path, data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (urllib.error.URLError, OSError) as error:
            # A refused or dropped connection is treated like a 503: retried, then reported.
            _logger.warning("research API unreachable: %s", type(error).__name__)
            return 503, b""

    def _decode(self, status: int, payload: bytes, what: str) -> dict[str, Any]:
        try:
            document = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            preview = payload[:80].decode("utf-8", "replace")
            raise MalformedResponse(
                f"{what}: HTTP {status} body is not JSON ({error.msg}): {preview!r}"
            ) from error
        if not isinstance(document, dict):
            raise MalformedResponse(f"{what}: HTTP {status} body is JSON but not an object")
        return document

    def _with_retries(self, send: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        """Call ``send`` until it answers neither 429 nor 5xx, backing off exponentially.

        Raises:
            QuotaExceeded: still 429 after the retries (the platform's quota or rate limit).
            ResearchApiError: still 5xx or unreachable after the retries.
        """
        for attempt in range(self.settings.max_retries + 1):
            status, payload = send()
            if status != 429 and status < 500:
                return status, payload
            if attempt < self.settings.max_retries:
                # Full jitter keeps collectors from retrying in lock-step after a shared outage.
                ceiling = min(
                    self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt
                )
                delay = random.uniform(ceiling / 2, ceiling)
                _logger.warning("research API HTTP %d, retry in %.2f s", status, delay)
                self._sleep(delay)
        retries = self.settings.max_retries
        if status == 429:
            raise QuotaExceeded(f"research API still rate-limited after {retries} retries")
        raise ResearchApiError(
            f"research API still failing (HTTP {status}) after {retries} retries"
        )

    def _access_token(self) -> str:
        if self._token is not None and self._clock() < self._token_expires:
            return self._token
        key, secret = self._credentials
        form = urllib.parse.urlencode(
            {"client_key": key, "client_secret": secret, "grant_type": "client_credentials"}
        ).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, payload = self._with_retries(lambda: self._post(_TOKEN_PATH, form, headers))
        document = self._decode(status, payload, "token request")
        if status != 200 or "access_token" not in document:
            raise ResearchApiError(
                f"token request refused: HTTP {status}, error {document.get('error')!r}"
            )
        try:
            lifetime = float(document["expires_in"])
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedResponse("token response has no numeric expires_in") from error
        self._token = str(document["access_token"])
        self._token_expires = self._clock() + lifetime - self.settings.token_margin_s
        self.token_refreshes += 1
        _logger.info("research API token obtained, valid %.0f s", lifetime)
        return self._token

    def _send_query(self, path: str, payload: bytes) -> tuple[int, bytes]:
        for fresh_token in (False, True):
            if fresh_token:
                # Tokens can be revoked before their announced expiry: refresh once, then retry.
                self._token = None
            headers = {
                "Authorization": f"Bearer {self._access_token()}",
                "Content-Type": "application/json",
            }
            self.quota.spend()
            self.requests += 1
            status, raw = self._post(path, payload, headers)
            if status != 401:
                break
        return status, raw

    def query_videos(self, body: dict[str, Any]) -> dict[str, Any]:
        """One page of the video query.

        Args:
            body: the documented request body (query, start_date, end_date, max_count, and
                cursor + search_id after the first page).

        Returns:
            The response's ``data`` object: ``videos``, ``cursor``, ``has_more``, ``search_id``.

        Raises:
            QuotaExceeded: the daily quota is spent, or 429s outlasted the retries.
            MalformedResponse: the body is not the documented JSON.
            ResearchApiError: an API error, or 5xx / no connection after the retries.
        """
        path = f"{_QUERY_PATH}?fields={','.join(VIDEO_FIELDS)}"
        payload = json.dumps(body).encode()
        status, raw = self._with_retries(lambda: self._send_query(path, payload))
        document = self._decode(status, raw, "video query")
        error = document.get("error") or {}
        if not isinstance(error, dict):
            error = {"code": error}
        if status != 200 or error.get("code") not in (None, "", "ok"):
            raise ResearchApiError(
                f"video query failed: HTTP {status}, {error.get('code')}: "
                f"{error.get('message')} (log_id {error.get('log_id')})"
            )
        data = document.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("videos", []), list):
            raise MalformedResponse("video query response has no data.videos list")
        return data


def _window(end0: date, index: int, days: int) -> tuple[str, str]:
    end = end0 - timedelta(days=index * days)
    start = end - timedelta(days=days - 1)
    return start.strftime("%Y%m%d"), end.strftime("%Y%m%d")


def _query(tag: str, regions: list[str]) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = [
        {"operation": "IN", "field_name": "hashtag_name", "field_values": [tag]}
    ]
    if regions:
        conditions.append({"operation": "IN", "field_name": "region_code", "field_values": regions})
    return {"and": conditions}


@dataclass(frozen=True, slots=True)
class CollectSummary:
    """What a collection run produced: kept videos per hashtag, skipped ones by reason."""

    manifest: Path
    kept: dict[str, int]
    skipped: dict[str, int]
    requests: int
    complete: bool = True
    missing: dict[str, int] = field(default_factory=dict)


class _RunState:
    """The resumable state of one run, persisted in the clip store."""

    VERSION: ClassVar[int] = 1

    def __init__(self, store: ClipStore, run: str) -> None:
        self.store = store
        self.run = run
        self.key = store.state_key(f"collect/{run}.json")
        self.data: dict[str, Any] = (
            store.get_json(self.key) if store.exists(self.key) else {"version": self.VERSION}
        )
        self.data.setdefault("tags", {})

    def items_key(self, tag: str) -> str:
        return self.store.state_key(f"collect/{self.run}/{tag}.jsonl")

    def items(self, tag: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.store.get_lines(self.items_key(tag))]

    def tag(self, tag: str) -> dict[str, Any]:
        return self.data["tags"].setdefault(
            tag,
            {"window": 0, "cursor": None, "search_id": None, "pages": 0, "done": False,
             "skipped": {}},
        )  # fmt: skip

    def save(self, quota: Quota) -> None:
        self.data["quota"] = {"day": quota.day, "used": quota.used}
        self.store.put_json(self.key, self.data)


def _manifest_line(
    video: dict[str, Any], tag: PlannedTag, query: str, url: str, collected_at: str
) -> dict[str, Any]:
    return {
        "url": url,
        "hashtag": tag.tag,
        "video_id": str(video["id"]),
        "view_count": video.get("view_count"),
        "like_count": video.get("like_count"),
        "share_count": video.get("share_count"),
        "comment_count": video.get("comment_count"),
        "allows_download": True,
        "description": video.get("video_description") or "",
        "region": video.get("region_code"),
        "create_time": video.get("create_time"),
        "duration": video.get("video_duration"),
        "hashtag_names": video.get("hashtag_names") or [],
        "rule": tag.rule,
        "query": query,
        "collected_at": collected_at,
    }


def _skip_reason(video: dict[str, Any], seen: set[str]) -> str | None:
    if "id" not in video or not video.get("username"):
        return "no_id_or_username"
    if str(video["id"]) in seen:
        return "duplicate"
    if "allows_download" not in video:
        return "download_permission_unknown"
    if video["allows_download"] is not True:
        return "download_not_allowed"
    return None


def _collect_tag(
    tag: PlannedTag,
    client: ResearchClient,
    state: _RunState,
    end0: date,
    downloader: Downloader | None,
    download_dir: Path | None,
) -> list[dict[str, Any]]:
    settings = client.settings
    progress = state.tag(tag.tag)
    items = state.items(tag.tag)
    seen = {item["video_id"] for item in items}
    while not progress["done"]:
        if len(items) >= tag.target_videos or progress["window"] >= settings.max_windows:
            progress["done"] = True
            state.save(client.quota)
            break
        start, end = _window(end0, progress["window"], settings.window_days)
        body: dict[str, Any] = {
            "query": _query(tag.tag, settings.region_codes),
            "start_date": start,
            "end_date": end,
            "max_count": settings.max_count,
        }
        if progress["cursor"] is not None:
            body["cursor"], body["search_id"] = progress["cursor"], progress["search_id"]
        try:
            data = client.query_videos(body)
        except QuotaExceeded:
            state.save(client.quota)
            raise
        query = f"hashtag_name IN [{tag.tag}]"
        if settings.region_codes:
            query += f" AND region_code IN [{','.join(settings.region_codes)}]"
        query += f" {start}-{end}"
        collected_at = utc_now()
        skipped = Counter(progress["skipped"])
        for video in data.get("videos") or []:
            if len(items) >= tag.target_videos:
                break
            reason = _skip_reason(video, seen)
            url = settings.video_url_template.format(
                username=video.get("username"), id=video.get("id")
            )
            line = _manifest_line(video, tag, query, url, collected_at)
            if reason is None and downloader is not None and download_dir is not None:
                try:
                    line = {
                        **line,
                        "page_url": url,
                        "url": str(downloader.fetch(url, download_dir)),
                    }
                except (DownloadFailed, InvalidSource, SourceNotFound, SourceTooLarge):
                    reason = "download_failed"
            if reason is not None:
                skipped[reason] += 1
                continue
            seen.add(line["video_id"])
            items.append(line)
        progress["skipped"] = dict(skipped)
        progress["pages"] += 1
        if data.get("has_more") and len(items) < tag.target_videos:
            progress["cursor"], progress["search_id"] = data.get("cursor"), data.get("search_id")
        else:
            progress["window"] += 1
            progress["cursor"] = progress["search_id"] = None
        # Videos first, then the cursor: a crash in between re-fetches one page, never skips one.
        state.store.put_lines(
            state.items_key(tag.tag), (json.dumps(i, sort_keys=True) for i in items)
        )
        state.save(client.quota)
        _logger.info(
            "collected page %d of #%s (%s-%s): %d kept so far",
            progress["pages"], tag.tag, start, end, len(items),
        )  # fmt: skip
    return items


def collect(
    plan: HashtagPlan,
    client: ResearchClient,
    store: ClipStore,
    out: Path,
    run: str,
    downloader: Downloader | None = None,
    download_dir: Path | None = None,
) -> CollectSummary:
    """Collect the kept hashtags of a plan into an ingestion manifest (JSONL).

    Args:
        plan: the reviewed plan; only tags with ``keep: true`` are queried.
        client: an authenticated research API client.
        store: clip store holding the resumable state under ``state/collect/{run}``.
        out: the manifest to write (one JSON object per video: url, hashtag, platform metadata,
            and the provenance fields rule, query, collected_at).
        run: name of the run; the same name resumes where a previous run stopped.
        downloader: when given with ``download_dir``, each kept video is fetched and the
            manifest's ``url`` is the local file (the page URL stays in ``page_url``).
        download_dir: where downloaded media goes.

    Returns:
        Counts per hashtag and per skip reason.

    Raises:
        QuotaExceeded: the daily quota ran out; state is saved, run again to resume.
    """
    state = _RunState(store, run)
    quota = state.data.get("quota") or {}
    client.quota.day, client.quota.used = quota.get("day", ""), int(quota.get("used", 0))
    # The windows are fixed when a run starts, so a run resumed on a later day pages on through
    # the same windows instead of starting new ones.
    state.data.setdefault(
        "end_date", (client.settings.end_date or datetime.now(UTC).date()).isoformat()
    )
    end0 = date.fromisoformat(state.data["end_date"])
    requests_before = client.requests
    lines: list[dict[str, Any]] = []
    kept: dict[str, int] = {}
    skipped: Counter[str] = Counter()
    for tag in plan.kept():
        items = _collect_tag(tag, client, state, end0, downloader, download_dir)
        lines.extend(items)
        kept[tag.tag] = len(items)
        skipped.update(state.tag(tag.tag)["skipped"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    partial.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    os.replace(partial, out)
    missing = {
        t.tag: t.target_videos - kept[t.tag] for t in plan.kept() if kept[t.tag] < t.target_videos
    }
    _logger.info("collection %s wrote %d videos to %s", run, len(lines), out)
    return CollectSummary(
        manifest=out,
        kept=kept,
        skipped=dict(skipped),
        requests=client.requests - requests_before,
        complete=not missing,
        missing=missing,
    )


def measure_views(client: ResearchClient, tags: list[str]) -> dict[str, int]:
    """Views of each hashtag measured through the API: the sum over one page of its newest window.

    A lower bound (one page, one window), but enough to see which side of the floor a tag is on.
    """
    end0 = client.settings.end_date or datetime.now(UTC).date()
    start, end = _window(end0, 0, client.settings.window_days)
    views = {}
    for tag in tags:
        body = {
            "query": _query(tag, client.settings.region_codes),
            "start_date": start,
            "end_date": end,
            "max_count": client.settings.max_count,
        }
        data = client.query_videos(body)
        views[tag] = sum(int(v.get("view_count") or 0) for v in data.get("videos") or [])
    return views
