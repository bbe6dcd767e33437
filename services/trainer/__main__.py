"""``python -m services.trainer MODE --recipe NAME ...`` (also under torchrun)."""

from services.trainer.commands import train

train(prog_name="python -m services.trainer")
