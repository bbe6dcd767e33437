"""The ``h2a`` console script: one group, sub-commands loaded when they are used.

Each area owns its commands next to its code; this file only names them, so ``h2a --help``
stays fast (no torch or kfp import until a command needs it).
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute"
_COMMANDS = {
    "curate": "services.ingestion.commands:curate",
    "demo": "pipelines.commands:demo",
    "pipeline": "pipelines.commands:pipeline",
    "train": "services.trainer.commands:train",
    "hashtags": "services.collection.commands:hashtags",
    "collect": "services.collection.commands:collect",
    "store": "services.collection.commands:store",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashtag2action")
def main() -> None:
    """Hashtag2Action: curate hashtag videos into action clips and pre-train VideoMAE V2."""
