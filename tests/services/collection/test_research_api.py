"""The research-API client and collector against the stand-in server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from services.cli import main
from services.collection.planning import HashtagPlan, PlannedTag, save_plan
from services.collection.research_api import (
    MalformedResponse,
    Quota,
    ResearchApiError,
    ResearchClient,
    ResearchSettings,
    collect,
    measure_views,
)
from services.common.errors import ConfigError, QuotaExceeded
from services.common.store import ClipStore
from services.ingestion.sources import expand_source

from .conftest import CLIENT_KEY, CLIENT_SECRET, make_videos


def _plan(*targets: tuple[str, int]) -> HashtagPlan:
    tags = tuple(
        PlannedTag(tag, "everyday", ("noun_substitution",), (f"ucf101:{tag}",), target_videos=n)
        for tag, n in targets
    )
    return HashtagPlan(tags)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pages_and_windows_until_target(fake_api, research_settings, local_store, tmp_path):
    api, _ = fake_api
    # 120 videos over 90 days: about 40 per 30-day window, 2 pages of 20 per window.
    api.videos["piano"] = make_videos("piano", 120, 90)
    out = tmp_path / "manifest.jsonl"
    summary = collect(
        _plan(("piano", 50)), ResearchClient(research_settings), local_store, out, "r"
    )

    lines = _read(out)
    assert len(lines) == 50 and summary.kept == {"piano": 50} and summary.complete
    windows = {(start, end) for _, start, end, _ in api.page_log()}
    assert len(windows) >= 2, "the target needs more than one 30-day window"
    assert ("20261022", "20261120") in windows and ("20260922", "20261021") in windows
    assert any(cursor for *_, cursor in api.page_log()), "later pages go by cursor"
    # Only owner-permitted videos; the rest counted by reason.
    assert all(line["allows_download"] is True for line in lines)
    assert summary.skipped["download_not_allowed"] > 0
    assert summary.skipped["download_permission_unknown"] > 0
    assert len({line["video_id"] for line in lines}) == 50
    first = lines[0]
    assert first["url"] == f"https://www.tiktok.com/@user0/video/{first['video_id']}"
    assert first["hashtag"] == "piano" and first["rule"] == "noun_substitution"
    assert first["query"].startswith("hashtag_name IN [piano] 20261022-20261120")
    assert first["collected_at"] and first["view_count"] >= 10_000
    # The ingestion service reads it as is, provenance included.
    items = expand_source(str(out))
    assert len(items) == 50 and items[0].hashtag == "piano"
    assert items[0].metadata["rule"] == "noun_substitution"
    assert items[0].metadata["allows_download"] is True


def test_empty_result_slides_back_to_the_window_limit(
    fake_api, research_settings, local_store, tmp_path
):
    api, _ = fake_api
    out = tmp_path / "m.jsonl"
    summary = collect(
        _plan(("nothing", 10)), ResearchClient(research_settings), local_store, out, "r"
    )
    assert out.read_text() == ""
    assert summary.kept == {"nothing": 0} and summary.missing == {"nothing": 10}
    assert not summary.complete
    assert len(api.queries) == research_settings.max_windows  # one empty page per window


def test_token_revoked_mid_run_is_refreshed(fake_api, research_settings, local_store, tmp_path):
    api, _ = fake_api
    api.videos["piano"] = make_videos("piano", 100, 25)
    api.revoke_after = 2
    client = ResearchClient(research_settings)
    collect(_plan(("piano", 60)), client, local_store, tmp_path / "m.jsonl", "r")
    assert api.unauthorized >= 2 and api.token_requests == api.unauthorized + 1
    assert len(_read(tmp_path / "m.jsonl")) == 60


def test_token_refreshed_before_expiry(fake_api, research_settings):
    api, _ = fake_api
    api.videos["piano"] = make_videos("piano", 10, 5)
    now = [0.0]
    settings = research_settings.model_copy(update={"token_margin_s": 60.0})
    client = ResearchClient(settings, clock=lambda: now[0])
    body = {"query": {"and": [{"operation": "IN", "field_name": "hashtag_name",
                               "field_values": ["piano"]}]},
            "start_date": "20261101", "end_date": "20261120", "max_count": 20}  # fmt: skip
    client.query_videos(body)
    now[0] = api.expires_in - 61.0  # still valid with the margin
    client.query_videos(body)
    assert api.token_requests == 1
    now[0] = api.expires_in - 59.0  # inside the margin: refresh before it expires
    client.query_videos(body)
    assert api.token_requests == 2 and api.unauthorized == 0


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_back_off_then_succeed(
    fake_api, research_settings, local_store, tmp_path, status
):
    api, _ = fake_api
    api.videos["piano"] = make_videos("piano", 30, 10)
    api.faults.extend([status, status])
    sleeps: list[float] = []
    client = ResearchClient(research_settings, sleep=sleeps.append)
    summary = collect(_plan(("piano", 15)), client, local_store, tmp_path / "m.jsonl", "r")
    assert summary.kept == {"piano": 15}
    assert [q["status"] for q in api.queries[:3]] == [status, status, 200]
    backoffs = [s for s in sleeps if s > 0]
    assert len(backoffs) == 2 and backoffs[1] > 0
    assert all(s <= research_settings.backoff_max_s for s in backoffs)


def test_retries_are_bounded(fake_api, research_settings):
    api, _ = fake_api
    api.faults.extend([500] * 10)
    client = ResearchClient(research_settings)
    body = {"query": {"and": [{"operation": "IN", "field_name": "hashtag_name",
                               "field_values": ["x"]}]},
            "start_date": "20261101", "end_date": "20261120", "max_count": 20}  # fmt: skip
    with pytest.raises(ResearchApiError, match="after 3 retries"):
        client.query_videos(body)
    assert len(api.queries) == research_settings.max_retries + 1
    api.faults.clear()
    api.faults.extend([429] * 4)
    with pytest.raises(QuotaExceeded):
        client.query_videos(body)


def test_malformed_json_is_a_clear_error(fake_api, research_settings, local_store, tmp_path):
    api, _ = fake_api
    api.faults.append(b'{"data": {"videos": [')
    with pytest.raises(MalformedResponse, match="not JSON"):
        collect(
            _plan(("piano", 5)), ResearchClient(research_settings), local_store, tmp_path / "m", "r"
        )


def test_quota_exhaustion_saves_state_and_resumes(
    fake_api, research_settings, local_store, tmp_path
):
    api, _ = fake_api
    api.videos["piano"] = make_videos("piano", 90, 60)
    api.videos["violin"] = make_videos("violin", 40, 20, start_id=5000)
    plan = _plan(("piano", 50), ("violin", 25))
    out = tmp_path / "m.jsonl"
    tight = research_settings.model_copy(update={"daily_quota": 3})
    with pytest.raises(QuotaExceeded, match="quota of 3"):
        collect(plan, ResearchClient(tight), local_store, out, "night")
    assert not out.exists()
    state = local_store.get_json(ClipStore.state_key("collect/night.json"))
    assert state["quota"]["used"] == 3 and state["tags"]["piano"]["pages"] == 3
    fetched_before = api.page_log()

    summary = collect(plan, ResearchClient(research_settings), local_store, out, "night")
    fetched_after = api.page_log()[len(fetched_before) :]
    assert not set(fetched_before) & set(fetched_after), "no page is fetched twice"
    assert summary.kept == {"piano": 50, "violin": 25} and summary.complete

    # Same result as one uninterrupted run.
    fresh = ClipStore.from_settings(local_store_settings(tmp_path / "fresh"))
    collect(plan, ResearchClient(research_settings), fresh, tmp_path / "fresh.jsonl", "night")
    ids = [line["video_id"] for line in _read(out)]
    assert ids == [line["video_id"] for line in _read(tmp_path / "fresh.jsonl")]


def local_store_settings(root: Path):
    from services.common.config import StoreSettings

    return StoreSettings(backend="local", root=root)


def test_credentials_from_secret_dir_and_missing(research_settings, tmp_path):
    folder = tmp_path / "secret"
    folder.mkdir()
    (folder / "client_key").write_text(CLIENT_KEY + "\n")
    (folder / "client_secret").write_text(CLIENT_SECRET + "\n")
    mounted = research_settings.model_copy(
        update={"client_key": None, "client_secret": None, "secret_dir": folder}
    )
    assert ResearchClient(mounted)._access_token().startswith("act.")
    with pytest.raises(ConfigError, match="H2A_RESEARCH_CLIENT_KEY") as error:
        ResearchClient(ResearchSettings(client_key=None, client_secret=None))
    assert CLIENT_SECRET not in str(error.value)


def test_credentials_never_printed_or_logged(fake_api, tmp_path, monkeypatch, caplog):
    api, base_url = fake_api
    api.videos["piano"] = make_videos("piano", 30, 10)
    api.faults.extend([429, 500])
    api.revoke_after = 1
    plan_path = tmp_path / "plan.yaml"
    save_plan(_plan(("piano", 10)), plan_path)
    env = {
        "H2A_RESEARCH_BASE_URL": base_url,
        "H2A_RESEARCH_CLIENT_KEY": CLIENT_KEY,
        "H2A_RESEARCH_CLIENT_SECRET": CLIENT_SECRET,
        "H2A_RESEARCH_END_DATE": "2026-11-20",
        "H2A_RESEARCH_MIN_INTERVAL_S": "0",
        "H2A_RESEARCH_BACKOFF_BASE_S": "0.001",
        "H2A_RESEARCH_TOKEN_MARGIN_S": "0",
        "H2A_STORE_ROOT": str(tmp_path / "store"),
        "H2A_LOG_LEVEL": "DEBUG",
        "COLUMNS": "200",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "m.jsonl"
    result = CliRunner().invoke(main, ["collect", "--plan", str(plan_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "#piano" in result.output and len(_read(out)) == 10
    assert api.token_requests >= 2  # refreshed, so the token path was exercised repeatedly
    shown = result.output + (result.stderr or "") + caplog.text
    shown += repr(ResearchSettings()) + str(ResearchSettings().model_dump())
    for secret in (CLIENT_KEY, CLIENT_SECRET, "act.0001"):
        assert secret not in shown
    state = (tmp_path / "store" / "state" / "collect" / "plan.json").read_text()
    assert CLIENT_SECRET not in state and "act.0" not in state


def test_measure_views_sums_the_newest_window(fake_api, research_settings):
    api, _ = fake_api
    api.videos["piano"] = make_videos("piano", 30, 60)
    views = measure_views(ResearchClient(research_settings), ["piano", "nothing"])
    window_start = datetime(2026, 10, 22, tzinfo=UTC).timestamp()
    newest = [v for v in api.videos["piano"] if v["create_time"] >= window_start][:20]
    assert views == {"piano": sum(v["view_count"] for v in newest), "nothing": 0}
    assert [q["start_date"] for q in api.queries] == ["20261022", "20261022"]


def test_token_endpoint_errors(fake_api, research_settings):
    api, _ = fake_api
    api.videos["piano"] = make_videos("piano", 5, 5)
    api.token_faults.extend([503, 500])
    client = ResearchClient(research_settings)
    assert client._access_token() == "act.0001"  # retried through two 5xx
    wrong = research_settings.model_copy(update={"client_secret": SecretStr("not-the-secret")})
    with pytest.raises(ResearchApiError, match="invalid_client"):
        ResearchClient(wrong)._access_token()


def test_rate_limit_spaces_requests(research_settings):
    waits: list[float] = []
    spaced = research_settings.model_copy(update={"min_interval_s": 0.5})
    client = ResearchClient(spaced, sleep=waits.append)  # record the waits instead of sleeping
    body = {"query": {"and": [{"operation": "IN", "field_name": "hashtag_name",
                               "field_values": ["x"]}]},
            "start_date": "20261101", "end_date": "20261120", "max_count": 20}  # fmt: skip
    for _ in range(3):
        client.query_videos(body)
    # token + 3 queries: every request after the first waits for the rest of the interval
    assert len(waits) == 3 and all(0.4 < wait <= 0.5 for wait in waits)


def test_daily_quota_resets_on_a_new_day():
    quota = Quota(limit=2, day="2000-01-01", used=2)
    quota.spend()
    assert quota.used == 1 and quota.day != "2000-01-01"
    quota.spend()
    with pytest.raises(QuotaExceeded):
        quota.spend()
