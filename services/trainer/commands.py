"""``h2a train`` / ``python -m services.trainer``: the trainer's command line.

One sub-command per mode of ``services.trainer.main.run``, all with the same options, so a
PyTorchJob container runs ``torchrun ... -m services.trainer pretrain --recipe NAME ...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from services.common.config import LoggingSettings
from services.common.logs import configure_logging

__all__ = ["train"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def train() -> None:
    """VideoMAE V2 pre-training, fine-tuning, weak-label training and evaluation."""


def _add_mode(mode: str, summary: str) -> None:
    @train.command(mode, help=summary)
    @click.option("--recipe", default="", help="A recipe (services.trainer.recipes.RECIPES).")
    @click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="A saved config.json (replaces the recipe).")  # fmt: skip
    @click.option("--manifest", help="A list file, or a dataset folder / store prefix ending in /.")
    @click.option("--output", help="Run name and local output folder.")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.FIELD=VALUE",
                  help="Override one config field (repeatable).")  # fmt: skip
    def command(
        recipe: str,
        config_file: Path | None,
        manifest: str | None,
        output: str | None,
        overrides: tuple[str, ...],
    ) -> None:
        from services.trainer.main import resolve_config, run

        logging_settings = LoggingSettings()
        configure_logging("trainer", logging_settings.level, logging_settings.json_lines)
        if not recipe and not config_file:
            raise click.UsageError("give --recipe NAME or --config FILE")
        try:
            config = resolve_config(
                mode, recipe, config_file=config_file, manifest=manifest, output=output,
                overrides=overrides,
            )  # fmt: skip
        except ValueError as error:
            raise click.UsageError(str(error)) from error
        result = run(mode, config)
        if result.output and (result.checkpoint or result.evaluation):
            summary = {
                "mode": result.mode,
                "output": str(result.output),
                "checkpoint": result.checkpoint,
                "steps": result.steps,
                "rejected": result.rejected,
                **{k: v for k, v in result.evaluation.items() if k in ("top1", "top5", "videos")},
            }
            click.echo(json.dumps(summary))


for _mode, _summary in (
    ("pretrain", "Dual-masking pre-training on a manifest of clips."),
    ("finetune", "Fine-tune a classifier (from a pre-trained checkpoint) and test it."),
    ("weak-label", "Weak-label pre-training: the classifier on hashtag labels."),
    ("evaluate", "Multi-view evaluation of a classifier checkpoint."),
):
    _add_mode(_mode, _summary)
