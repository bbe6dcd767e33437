"""One logging set-up per process: JSON lines with severity, timestamp and the ids in play.

Modules use ``logging.getLogger(__name__)`` and pass ids as ``extra={"source_id": ..., "stage":
...}``. Rank filtering for distributed training is a logging filter, never a patched ``print``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "RankFilter", "configure_logging"]

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRET_PATTERN = re.compile(
    r"(?i)(secret|password|token|access_key|secret_key|authorization)(['\"]?\s*[:=]\s*['\"]?)"
    r"([^\s'\",}]+)"
)


def _redact(text: str) -> str:
    return _SECRET_PATTERN.sub(lambda m: f"{m.group(1)}{m.group(2)}**********", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; secrets that slip into messages are masked."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "severity": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": _redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RankFilter(logging.Filter):
    """Keep records from rank 0 only (distributed training), unless they are warnings."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    """Install the process-wide handler. Call once, at the top of an entry point."""
    handler = logging.StreamHandler(sys.stdout if json_lines else sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    rank = int(os.environ.get("RANK", "0"))
    if rank:
        handler.addFilter(RankFilter(rank))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter that drowns the engine's own lines.
    for noisy in ("urllib3", "botocore", "werkzeug", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
