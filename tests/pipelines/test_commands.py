"""``h2a pipeline upload`` and ``submit`` against a loopback stand-in of the KFP v2beta1 API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from click.testing import CliRunner

from pipelines.commands import _quiet_kfp, pipeline
from pipelines.curate_and_train import PIPELINE_NAME


class FakeKfp:
    """The KFP API calls ``kfp.Client`` makes to upload pipelines and create runs."""

    def __init__(self) -> None:
        self.pipelines: dict[str, str] = {}  # display name -> id
        self.versions: list[dict[str, Any]] = []
        self.experiments: dict[str, str] = {}
        self.runs: list[dict[str, Any]] = []

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Any:
        route = (method, path.removeprefix("/apis/v2beta1"))
        if route == ("GET", "/healthz"):
            return {"multi_user": False}
        if route == ("GET", "/pipelines"):
            name = _filtered_name(query)
            found = [
                {"pipeline_id": pid, "display_name": n}
                for n, pid in self.pipelines.items()
                if n == name
            ]
            return {"pipelines": found, "total_size": len(found)}
        if route in {("POST", "/pipelines/upload"), ("POST", "/pipelines/upload_version")}:
            self.versions.append({"query": query, "spec": _uploaded_yaml(body)})
            if route[1] == "/pipelines/upload":
                pipeline_id = f"p{len(self.pipelines) + 1}"
                self.pipelines[query["name"][0]] = pipeline_id
                return {"pipeline_id": pipeline_id, "display_name": query["name"][0]}
            return {"pipeline_id": query["pipelineid"][0], "pipeline_version_id": "v2"}
        if route == ("GET", "/experiments"):
            name = _filtered_name(query)
            found = [
                {"experiment_id": eid, "display_name": n}
                for n, eid in self.experiments.items()
                if n == name
            ]
            return {"experiments": found, "total_size": len(found)}
        if route == ("POST", "/experiments"):
            created = json.loads(body)
            self.experiments[created["display_name"]] = "e1"
            return {**created, "experiment_id": "e1"}
        if route == ("POST", "/runs"):
            run = json.loads(body)
            self.runs.append(run)
            return {**run, "run_id": "r1", "state": "PENDING"}
        raise AssertionError(f"unexpected call {method} {path}")


def _filtered_name(query: dict[str, list[str]]) -> str:
    predicates = json.loads(query["filter"][0])["predicates"]
    return next(p["stringValue"] for p in predicates if p["key"] == "display_name")


def _uploaded_yaml(body: bytes) -> dict[str, Any]:
    """The first YAML document of a multipart upload (the pipeline spec)."""
    text = body.decode()
    start = text.index("# PIPELINE DEFINITION")
    end = text.index("\r\n--", start)
    return next(yaml.safe_load_all(text[start:end]))


@pytest.fixture()
def kfp_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, FakeKfp]]:
    # kfp.Client keeps a context file under $HOME
    monkeypatch.setenv("HOME", str(tmp_path))
    api = FakeKfp()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = json.dumps(api.handle(self.command, url.path, parse_qs(url.query), body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", api
    server.shutdown()
    server.server_close()


def test_upload_creates_then_adds_versions(kfp_api: tuple[str, FakeKfp]) -> None:
    host, api = kfp_api
    runner = CliRunner()
    first = runner.invoke(pipeline, ["upload", "--host", host, "--name", "h2a"])
    assert first.exit_code == 0, first.output
    assert api.pipelines == {"h2a": "p1"}
    second = runner.invoke(pipeline, ["upload", "--host", host, "--name", "h2a"])
    assert second.exit_code == 0, second.output
    assert "version v2 added" in second.output
    assert api.versions[1]["query"]["pipelineid"] == ["p1"]
    assert all(v["spec"]["pipelineInfo"]["name"] == PIPELINE_NAME for v in api.versions)


def test_submit_creates_a_run_with_parameters(kfp_api: tuple[str, FakeKfp]) -> None:
    host, api = kfp_api
    result = CliRunner().invoke(
        pipeline,
        [
            "submit",
            "--host", host,
            "--experiment", "ci",
            "--param", "source=s3://hashtag2action/incoming/",
            "--param", 'benchmarks=["ucf101"]',
            "--param", "epochs=2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "run r1 created" in result.output
    (run,) = api.runs
    assert run["experiment_id"] == "e1"
    assert run["service_account"] == "hashtag2action-pipeline-runner", "the Role's identity"
    assert run["runtime_config"]["parameters"] == {
        "source": "s3://hashtag2action/incoming/",
        "benchmarks": ["ucf101"],
        "epochs": 2,
    }
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == PIPELINE_NAME
    platform = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert "exec-pretrain" in platform["deploymentSpec"]["executors"], "secrets travel too"


def test_bad_param_is_a_usage_error() -> None:
    result = CliRunner().invoke(pipeline, ["submit", "--host", "x", "--param", "oops"])
    assert result.exit_code == 2 and "key=value" in result.output


def test_a_failed_local_run_shows_its_log_tail(tmp_path: Path, capsys) -> None:
    log = tmp_path / "logs" / "run.log"
    with pytest.raises(RuntimeError, match="inner task failed"), _quiet_kfp(log):
        print("Executing task 'curate-shard'")
        print("Traceback: ValueError: the real cause")
        raise RuntimeError("inner task failed")
    shown = capsys.readouterr().out
    assert "Executing task 'curate-shard'" in shown
    assert "the real cause" in shown and f"(full log: {log})" in shown
    assert "the real cause" in log.read_text()
