"""A research-API stand-in on 127.0.0.1 that follows the documented request/response shapes.

It checks what the real API checks (bearer token, field list, the query's ``and`` conditions,
YYYYMMDD dates, windows of at most 30 days, max_count <= 100, cursor only with its search_id),
pages by cursor, and can be told to fail: queued HTTP statuses or bodies, tokens revoked after
some queries. Every query is logged so tests can assert which pages were fetched.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.collection.research_api import VIDEO_FIELDS, ResearchSettings

CLIENT_KEY = "ck-test-4f1d2a77e0"
CLIENT_SECRET = "cs-test-9b8c7d6e5f4a3b2c1d0e"
END = date(2026, 11, 20)


def make_videos(tag: str, count: int, days: int, start_id: int = 1000) -> list[dict[str, Any]]:
    """``count`` videos of ``tag`` spread over the ``days`` days up to END, newest first.

    Every fourth video's owner forbids download and every seventh says nothing about it.
    """
    videos = []
    for index in range(count):
        day = END - timedelta(days=index * days // count)
        video: dict[str, Any] = {
            "id": start_id + index,
            "username": f"user{index % 13}",
            "video_description": f"#{tag} video {index}",
            "create_time": int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()),
            "region_code": "US",
            "view_count": 10_000 + index,
            "like_count": 100 + index,
            "share_count": 3,
            "comment_count": 4,
            "hashtag_names": [tag, "fyp"],
            "video_duration": 12,
        }
        if index % 7 != 6:
            video["allows_download"] = index % 4 != 3
        videos.append(video)
    return videos


@dataclass
class FakeApi:
    """State of the stand-in; tests edit it between calls."""

    videos: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    expires_in: int = 7200
    revoke_after: int | None = None
    """Revoke every token after this many queries made with it (expiry before the announced)."""
    faults: deque = field(default_factory=deque)
    """Queued answers for the next queries: an int status, or raw bytes sent with 200."""
    token_faults: deque = field(default_factory=deque)
    """Queued HTTP statuses for the next token requests."""
    queries: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    token_requests: int = 0
    unauthorized: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def page_log(self) -> list[tuple[str, str, str, Any]]:
        return [
            (q["tag"], q["start_date"], q["end_date"], q.get("cursor"))
            for q in self.queries
            if q["status"] == 200
        ]


class _Handler(BaseHTTPRequestHandler):
    api: FakeApi

    def log_message(self, *args: Any) -> None:
        """Quiet: the test output stays readable."""

    def _send(self, status: int, body: bytes | dict[str, Any]) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"data": {}, "error": {"code": code, "message": message, "log_id": "x"}})

    def do_POST(self) -> None:
        url = urllib.parse.urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if url.path == "/v2/oauth/token/":
            self._token(urllib.parse.parse_qs(body.decode()))
        elif url.path == "/v2/research/video/query/":
            self._query(urllib.parse.parse_qs(url.query), body)
        else:
            self._error(404, "not_found", url.path)

    def _token(self, form: dict[str, list[str]]) -> None:
        api = self.api
        if api.token_faults:
            self._send(api.token_faults.popleft(), {"error": "server_error"})
            return
        if (
            form.get("client_key") != [CLIENT_KEY]
            or form.get("client_secret") != [CLIENT_SECRET]
            or form.get("grant_type") != ["client_credentials"]
        ):
            self._send(401, {"error": "invalid_client", "error_description": "bad credentials"})
            return
        with api.lock:
            api.token_requests += 1
            token = f"act.{api.token_requests:04d}"
            api.tokens[token] = 0
        self._send(
            200, {"access_token": token, "expires_in": api.expires_in, "token_type": "Bearer"}
        )

    def _query(self, params: dict[str, list[str]], raw: bytes) -> None:
        api = self.api
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        with api.lock:
            uses = api.tokens.get(token)
            if uses is None or (api.revoke_after is not None and uses >= api.revoke_after):
                api.unauthorized += 1
                self._error(401, "access_token_invalid", "token expired or revoked")
                return
            api.tokens[token] = uses + 1
            fault = api.faults.popleft() if api.faults else None
        if params.get("fields", [""])[0].split(",") != list(VIDEO_FIELDS):
            self._error(400, "invalid_params", "unexpected field list")
            return
        body = json.loads(raw)
        condition = body["query"]["and"][0]
        assert condition["operation"] == "IN" and condition["field_name"] == "hashtag_name"
        tag = condition["field_values"][0]
        start = datetime.strptime(body["start_date"], "%Y%m%d").date()
        end = datetime.strptime(body["end_date"], "%Y%m%d").date()
        record = {**body, "tag": tag, "status": fault if isinstance(fault, int) else 200}
        with api.lock:
            api.queries.append(record)
        if isinstance(fault, int):
            self._error(fault, "internal_error" if fault >= 500 else "rate_limit_exceeded", "x")
            return
        if isinstance(fault, bytes):
            self._send(200, fault)
            return
        if not 0 <= (end - start).days < 30 or not 1 <= body["max_count"] <= 100:
            self._error(400, "invalid_params", "window over 30 days or bad max_count")
            return
        search_id = f"{tag}-{body['start_date']}-{body['end_date']}"
        if "cursor" in body and body.get("search_id") != search_id:
            self._error(400, "invalid_params", "cursor without its search_id")
            return
        matching = [
            v
            for v in api.videos.get(tag, [])
            if start <= datetime.fromtimestamp(v["create_time"], UTC).date() <= end
        ]
        cursor = int(body.get("cursor") or 0)
        page = matching[cursor : cursor + body["max_count"]]
        has_more = cursor + len(page) < len(matching)
        data = {
            "videos": page,
            "cursor": cursor + len(page),
            "has_more": has_more,
            "search_id": search_id,
        }
        self._send(200, {"data": data, "error": {"code": "ok", "message": "", "log_id": "y"}})


@pytest.fixture()
def fake_api() -> Any:
    """(FakeApi, base_url) of a stand-in research API on 127.0.0.1."""
    api = FakeApi()
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield api, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def research_settings(fake_api: Any) -> ResearchSettings:
    """Settings against the stand-in: tiny waits, small pages, the fixed END date."""
    _, base_url = fake_api
    return ResearchSettings(
        base_url=base_url,
        client_key=CLIENT_KEY,
        client_secret=CLIENT_SECRET,
        end_date=END,
        max_count=20,
        max_windows=4,
        min_interval_s=0.0,
        backoff_base_s=0.001,
        backoff_max_s=0.01,
        max_retries=3,
        timeout_s=5.0,
        token_margin_s=0.0,
    )


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    """Commands install the process-wide handler; give the next test the root logger back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
