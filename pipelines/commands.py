"""``h2a pipeline {compile,submit,upload,run-local}``, ``h2a demo`` and ``h2a study``.

``compile`` writes the IR YAML; ``submit`` creates a run on a Kubeflow Pipelines API (what CI
uses); ``upload`` registers the compiled pipeline, or a new version of it (the Helm hook Job);
``run-local`` runs the same pipeline with kfp's ``SubprocessRunner`` on an embedded store, and
``demo`` is ``run-local`` on the bundled sample videos with a tiny model. ``h2a study scaling
{compile,run-local}`` does the same for the data-scaling study (``pipelines.scaling_study``);
a compiled study is submitted with ``h2a pipeline submit --package``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click

__all__ = [
    "DEMO_ARGUMENTS",
    "STUDY_LOCAL_ARGUMENTS",
    "LocalRun",
    "StudyRun",
    "demo",
    "pipeline",
    "run_local",
    "run_study_local",
    "study",
]

# A run that shows every step on 2 CPU cores in minutes: the tiny ViT, one curated clip per
# batch (the samples give few clips), the moving-squares benchmark.
DEMO_ARGUMENTS: dict[str, Any] = {
    "shards": 2,
    "curate_workers": 2,
    "model_size": "tiny",
    "epochs": 2,
    "finetune_epochs": 15,
    "pretrain_overrides": ["data.batch_size=1", "runtime.progress=false"],
    "finetune_overrides": ["runtime.progress=false"],
    "benchmarks": ["synthetic"],
    "synthetic_per_class": 32,
}


# The study on this machine: the tiny ViT, one clip per pre-training batch (subsets are small),
# the moving-squares benchmark; a few minutes on 2 CPU cores for a handful of subsets.
STUDY_LOCAL_ARGUMENTS: dict[str, Any] = {
    "model_size": "tiny",
    "benchmark": "synthetic",
    "epochs": 2,
    "finetune_epochs": 10,
    "synthetic_per_class": 8,
    "pretrain_overrides": ["data.batch_size=1", "runtime.progress=false"],
    "finetune_overrides": ["runtime.progress=false"],
}


def _parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    """``k=v`` pairs; a value that parses as JSON is taken as such (numbers, lists, dicts)."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--param")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _embedded_store(root: Path | None = None) -> dict[str, Any]:
    """The pipeline's ``store`` for a local folder, by default ``.h2a/store``; absolute, since
    every step and training process of a local run may start in another directory."""
    from services.common.config import StoreSettings, default_store_root

    return StoreSettings(
        backend="local", root=(root or default_store_root()).resolve()
    ).to_description()


def _compiled(package: Path | None) -> Path:
    from pipelines.curate_and_train import PIPELINE_NAME, compile_pipeline

    if package is not None and package.is_file():
        return package
    target = package or Path(tempfile.mkdtemp(prefix="h2a-pipeline-")) / f"{PIPELINE_NAME}.yaml"
    return compile_pipeline(target)


class _ProgressTee(io.TextIOBase):
    """kfp's local runner prints every line of every executor: keep them all in a log file and
    show people only the task and pipeline transitions."""

    _PROGRESS = re.compile(r"Executing task|Task .* finished with status|Pipeline .* finished")

    def __init__(self, log: TextIO, terminal: TextIO) -> None:
        self.log, self.terminal, self._partial = log, terminal, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if self._PROGRESS.search(line):
                self.terminal.write(line.strip() + "\n")
                self.terminal.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()


@contextlib.contextmanager
def _quiet_kfp(log_path: Path) -> Any:
    """Send kfp's output to ``log_path``; on failure, show its tail and where the rest is."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stdout
    with open(log_path, "w") as log:
        try:
            with contextlib.redirect_stdout(_ProgressTee(log, terminal)):
                yield
        except BaseException:
            log.flush()
            tail = log_path.read_text().splitlines()[-60:]
            terminal.write("\n".join(tail) + f"\n(full log: {log_path})\n")
            raise


@dataclass(frozen=True)
class LocalRun:
    """Where a local run left its outputs."""

    folder: Path
    """The run's folder under the pipeline root: one sub-folder per task."""
    report: Path
    """The report artifact: Markdown with the plots inlined."""
    store_report: Path
    """The dataset's report.md in the embedded store, beside its plots/ and manifests."""
    summary: Path
    elapsed_s: float
    log: Path | None
    """Every executor's output (None when it went to the terminal)."""


def _run_locally(
    pipeline_fn: Any, arguments: dict[str, Any], pipeline_root: Path, verbose: bool, log_name: str
) -> tuple[Any, Path, float, Path | None]:
    """Run a pipeline with kfp's ``SubprocessRunner``; its task, run folder, time and log."""
    from kfp import local

    pipeline_root = Path(pipeline_root).resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = set(pipeline_root.iterdir())
    started = time.monotonic()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    log = None if verbose else pipeline_root / "logs" / f"{log_name}-{stamp}.log"
    with contextlib.nullcontext() if log is None else _quiet_kfp(log), warnings.catch_warnings():
        # Locally this Python is our image: kfp's notices about custom base images and the
        # evaluate step's accelerator (honoured in the cluster only) say nothing to act on.
        warnings.filterwarnings("ignore", "You may be attemping to run a task", RuntimeWarning)
        warnings.filterwarnings("ignore", r"Task '.*': settings \['accelerator'\]", UserWarning)
        task = pipeline_fn(**arguments)
    (folder,) = {path for path in set(pipeline_root.iterdir()) - before if path.name != "logs"}
    return task, folder, time.monotonic() - started, log


def run_local(arguments: dict[str, Any], pipeline_root: Path, verbose: bool = False) -> LocalRun:
    """Run the pipeline with kfp's ``SubprocessRunner`` in this machine's Python.

    Args:
        arguments: pipeline parameters; ``launcher`` defaults to ``local`` and ``store`` to the
            embedded default folder.
        pipeline_root: where kfp writes each run's artifacts.
        verbose: print every executor's output instead of logging it to
            ``{pipeline_root}/logs/`` and showing only task progress.

    Returns:
        The run folder and the report and summary artifacts.
    """
    from pipelines.curate_and_train import curate_and_train
    from services.common.config import StoreSettings
    from services.common.store import ClipStore
    from services.curation.report import REPORT_NAME

    arguments = {"launcher": "local", "store": _embedded_store(), **arguments}
    task, folder, elapsed, log = _run_locally(
        curate_and_train, arguments, pipeline_root, verbose, "run-local"
    )
    return LocalRun(
        folder=folder,
        report=Path(task.outputs["report"].path),
        store_report=StoreSettings.from_description(arguments["store"]).root
        / ClipStore.manifest_key(arguments.get("dataset", "default"), REPORT_NAME),
        summary=Path(task.outputs["summary"].path),
        elapsed_s=elapsed,
        log=log,
    )


@click.group("pipeline")
def pipeline() -> None:
    """Compile, submit, upload or locally run the Kubeflow pipeline."""


@pipeline.command("compile")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("hashtag2action-curate-and-train.yaml"),
    show_default=True,
    help="Where to write the IR YAML.",
)
def compile_command(output: Path) -> None:
    """Write the pipeline's IR YAML."""
    from pipelines.curate_and_train import compile_pipeline

    click.echo(compile_pipeline(output))


_PARAM = click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A pipeline parameter (repeatable); JSON values for lists and dicts.",
)


def _local_run_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of a local run: the embedded store, kfp's root, verbosity, parameters."""
    for option in reversed(
        (
            click.option(
                "--store",
                "store_root",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help="Embedded store folder (default: .h2a/store).",
            ),
            click.option(
                "--pipeline-root",
                type=click.Path(file_okay=False, path_type=Path),
                default=Path(".h2a/pipeline"),
                show_default=True,
                help="Where kfp keeps each run's artifacts.",
            ),
            click.option(
                "--verbose", is_flag=True, help="Print every step's output (default: a log file)."
            ),
            _PARAM,
        )
    ):
        command = option(command)
    return command


@pipeline.command("submit")
@click.option("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline:8888.")
@click.option("--namespace", default=None, help="Kubeflow profile namespace of the run.")
@click.option("--experiment", default="hashtag2action", show_default=True)
@click.option("--run-name", default=None, help="Default: the pipeline name and a timestamp.")
@click.option("--package", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A compiled IR YAML (default: compile now).")  # fmt: skip
@click.option(
    "--service-account",
    default="hashtag2action-pipeline-runner",
    show_default=True,
    help="Kubernetes identity of the step pods; the training steps need the chart's Role "
    "(create, watch and delete PyTorchJobs, read pod logs). Empty: the KFP default.",
)
@click.option("--wait/--no-wait", default=False, help="Wait for the run to finish.")
@click.option("--timeout-s", default=24 * 3600, show_default=True, help="With --wait.")
@_PARAM
def submit(
    host: str,
    namespace: str | None,
    experiment: str,
    run_name: str | None,
    package: Path | None,
    service_account: str,
    wait: bool,
    timeout_s: int,
    params: tuple[str, ...],
) -> None:
    """Create a run of the pipeline on a Kubeflow Pipelines API."""
    import kfp

    arguments = _parse_params(params)
    client = kfp.Client(host=host, namespace=namespace)
    result = client.create_run_from_pipeline_package(
        str(_compiled(package)),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        service_account=service_account or None,
    )
    click.echo(f"run {result.run_id} created in experiment {experiment!r}")
    if wait:
        run = client.wait_for_run_completion(result.run_id, timeout=timeout_s)
        click.echo(f"run {result.run_id} finished: {run.state}")
        if run.state != "SUCCEEDED":
            raise click.ClickException(f"run {result.run_id} ended {run.state}")


@pipeline.command("upload")
@click.option("--host", required=True, help="KFP API endpoint.")
@click.option("--name", default="hashtag2action", show_default=True, help="Pipeline name.")
@click.option("--package", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A compiled IR YAML (default: compile now).")  # fmt: skip
def upload(host: str, name: str, package: Path | None) -> None:
    """Register the pipeline, or add a version when a pipeline of that name exists."""
    import importlib.metadata

    import kfp

    client = kfp.Client(host=host)
    path = str(_compiled(package))
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        created = client.upload_pipeline(path, pipeline_name=name)
        click.echo(f"pipeline {name!r} created: {created.pipeline_id}")
        return
    # Unique per upload: every Helm upgrade adds a version, the newest is the default.
    version_name = (
        f"{importlib.metadata.version('hashtag2action')}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    version = client.upload_pipeline_version(
        path, pipeline_version_name=version_name, pipeline_id=pipeline_id
    )
    click.echo(f"pipeline {name!r}: version {version.pipeline_version_id} added")


@pipeline.command("run-local")
@click.option("--source", required=True, help="Videos: file, folder, URL or manifest.")
@_local_run_options
def run_local_command(
    source: str,
    store_root: Path | None,
    pipeline_root: Path,
    verbose: bool,
    params: tuple[str, ...],
) -> None:
    """Run the whole pipeline on this machine (kfp SubprocessRunner, torchrun on CPU)."""
    arguments = {"source": source, **_parse_params(params)}
    if store_root is not None:
        arguments["store"] = _embedded_store(store_root)
    _print_run(run_local(arguments, pipeline_root, verbose))


def _print_run(run: LocalRun) -> None:
    click.echo(f"pipeline finished in {run.elapsed_s:.0f} s")
    click.echo(f"  artifacts: {run.folder}")
    click.echo(f"  dataset report: {run.store_report}")
    click.echo(f"  dataset report artifact: {run.report}")
    click.echo(f"  benchmark summary: {run.summary}")
    if run.log is not None:
        click.echo(f"  every step's output: {run.log}")
    click.echo("")
    click.echo(run.summary.read_text())


@click.command("demo")
@click.option("--store", "store_root", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Embedded store folder (default: .h2a/store).")  # fmt: skip
@click.option("--pipeline-root", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".h2a/pipeline"), show_default=True)  # fmt: skip
@click.option("--verbose", is_flag=True, help="Print every step's output (default: a log file).")
def demo(store_root: Path | None, pipeline_root: Path, verbose: bool) -> None:
    """The pipeline on the sample videos with a tiny model and a synthetic benchmark."""
    from services.common.samples import SAMPLE_HASHTAGS, sample_videos

    pipeline_root = pipeline_root.resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    source = pipeline_root / "demo-sources.jsonl"
    source.write_text(
        "".join(
            json.dumps({"url": str(path), "hashtag": SAMPLE_HASHTAGS[name]}) + "\n"
            for name, path in sample_videos().items()
        )
    )
    arguments = {"source": str(source), **DEMO_ARGUMENTS}
    if store_root is not None:
        arguments["store"] = _embedded_store(store_root)
    _print_run(run_local(arguments, pipeline_root, verbose))


@dataclass(frozen=True)
class StudyRun:
    """Where a local study left its outputs."""

    folder: Path
    report: Path
    """The report artifact: the table, the verdict and the plot inlined."""
    plot: Path
    """The plot artifact (PNG)."""
    store_report: str
    """The report's URI in the store, beside results.json and plot.png."""
    elapsed_s: float
    log: Path | None


def run_study_local(
    arguments: dict[str, Any], pipeline_root: Path, verbose: bool = False
) -> StudyRun:
    """Run the data-scaling study with kfp's ``SubprocessRunner`` (see ``run_local``).

    Args:
        arguments: study parameters (``dataset`` and ``sizes`` at least); ``launcher``
            defaults to ``local``, ``store`` to the embedded default folder and the rest to
            ``STUDY_LOCAL_ARGUMENTS``.
        pipeline_root: where kfp writes each run's artifacts.
        verbose: print every executor's output.
    """
    from pipelines.scaling_study import scaling_study

    arguments = {
        "launcher": "local",
        "store": _embedded_store(),
        **STUDY_LOCAL_ARGUMENTS,
        **arguments,
    }
    task, folder, elapsed, log = _run_locally(
        scaling_study, arguments, pipeline_root, verbose, "study-scaling"
    )
    report = task.outputs["report"]
    return StudyRun(
        folder=folder,
        report=Path(report.path),
        plot=Path(task.outputs["plot"].path),
        store_report=report.metadata["uri"],
        elapsed_s=elapsed,
        log=log,
    )


@click.group("study")
def study() -> None:
    """Studies made of the pipeline's steps."""


@study.group("scaling")
def scaling() -> None:
    """The data-scaling study (the VideoMAE V2 paper's Fig. 4): pre-train on random subsets
    of a dataset, fine-tune each on a benchmark, plot top-1/top-5 against subset size."""


@scaling.command("compile")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("hashtag2action-scaling-study.yaml"),
    show_default=True,
    help="Where to write the IR YAML (submit it with `h2a pipeline submit --package`).",
)
@click.option("--parallelism", default=2, show_default=True, help="Subsets trained at once.")
def compile_study_command(output: Path, parallelism: int) -> None:
    """Write the study's IR YAML."""
    from pipelines.scaling_study import compile_study

    click.echo(compile_study(output, parallelism))


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return [int(size) for size in value.split(",") if size.strip()]
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not comma-separated integers") from error


@scaling.command("run-local")
@click.option("--dataset", required=True, help="A published dataset of the store.")
@click.option("--sizes", required=True, callback=_sizes, help="Subset sizes, e.g. 2,4,6.")
@click.option("--repeats", default=2, show_default=True, help="Subsets drawn per size.")
@_local_run_options
def study_run_local_command(
    dataset: str,
    sizes: list[int],
    repeats: int,
    store_root: Path | None,
    pipeline_root: Path,
    verbose: bool,
    params: tuple[str, ...],
) -> None:
    """Run the study on this machine: the tiny ViT and the synthetic benchmark by default."""
    arguments = {"dataset": dataset, "sizes": sizes, "repeats": repeats, **_parse_params(params)}
    if store_root is not None:
        arguments["store"] = _embedded_store(store_root)
    run = run_study_local(arguments, pipeline_root, verbose)
    click.echo(f"study finished in {run.elapsed_s:.0f} s")
    click.echo(f"  artifacts: {run.folder}")
    click.echo(f"  report: {run.report} ({run.store_report} in the store)")
    click.echo(f"  plot: {run.plot}")
    if run.log is not None:
        click.echo(f"  every step's output: {run.log}")
    click.echo("")
    # The table and the verdict; the plot is the PNG above.
    text = run.report.read_text().splitlines()
    click.echo("\n".join(line for line in text if not line.startswith("![")))
