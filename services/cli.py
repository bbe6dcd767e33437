"""The ``h2a`` console script: one group, sub-commands loaded when they are used.

Each area owns its commands next to its code; this file only names them, so ``h2a --help``
stays fast (no torch or kfp import until a command runs).
"""

from __future__ import annotations

import importlib

import click

# command name -> ("module:attribute", one-line help shown by `h2a --help`)
_COMMANDS = {
    "curate": ("services.curation.commands:curate", "Curate videos into action clips."),
    "dataset": ("services.curation.commands:dataset", "Inspect, publish and compact datasets."),
    "demo": ("pipelines.commands:demo", "Run the whole pipeline locally on sample videos."),
    "pipeline": ("pipelines.commands:pipeline", "Compile, submit or run the Kubeflow pipeline."),
    "study": ("pipelines.commands:study", "Data-scaling study: pre-train on subsets, plot."),
    "train": ("services.trainer.commands:train", "Pre-train, fine-tune and evaluate VideoMAE V2."),
    "hashtags": ("services.collection.commands:hashtags", "Plan hashtags from seed actions."),
    "collect": ("services.collection.commands:collect", "Collect videos via the research API."),
    "store": ("services.collection.commands:store", "Inspect and purge the clip store."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module_name, attribute = _COMMANDS[cmd_name][0].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashtag2action")
def main() -> None:
    """Hashtag2Action: curate hashtag videos into action clips and pre-train VideoMAE V2."""
