"""One logging set-up per process: JSON lines with severity, timestamp and the ids in play.

Modules use ``logging.getLogger(__name__)`` and pass ids as ``extra={"source_id": ..., "stage":
...}``. Rank filtering for distributed training is a logging filter, never a patched ``print``.
The message and every extra field are cut to a bounded length (``bounded``): they often echo
inputs, and a 2 MB field would make a 2 MB line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "RankFilter", "bounded", "configure_logging"]

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRET_PATTERN = re.compile(
    r"(?i)(secret|password|token|access_key|secret_key|authorization)(['\"]?\s*[:=]\s*['\"]?)"
    r"([^\s'\",}]+)"
)
# Budgets in UTF-8 bytes. A field has room for the settings a service logs at its start.
_MESSAGE_BYTES = 4096
_FIELD_BYTES = 2048
_EXCEPTION_BYTES = 16384


def bounded(text: str, limit: int) -> str:
    """``text`` cut to its first ``limit`` bytes of UTF-8, saying how long it was, when longer.

    Bytes rather than characters: what must stay small is a log line or a gRPC header, and a
    character can take four bytes. Undecodable bytes (surrogate escapes) count as three.
    """
    if len(text) * 4 <= limit:
        return text
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    # "ignore" drops the character the cut went through.
    return f"{encoded[:limit].decode('utf-8', 'ignore')}... ({len(text)} characters)"


def _field(value: Any) -> Any:
    """An extra field as logged: itself when short, else its JSON text cut short."""
    if isinstance(value, str):
        return bounded(value, _FIELD_BYTES)
    if value is None or isinstance(value, bool | int | float):
        return value
    text = json.dumps(value, default=str)
    return value if len(text) <= _FIELD_BYTES else bounded(text, _FIELD_BYTES)


def _redact(text: str) -> str:
    return _SECRET_PATTERN.sub(lambda m: f"{m.group(1)}{m.group(2)}**********", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; secrets that slip into messages are masked, long values cut."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "severity": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": bounded(_redact(record.getMessage()), _MESSAGE_BYTES),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = _field(value)
        if record.exc_info:
            entry["exception"] = bounded(self.formatException(record.exc_info), _EXCEPTION_BYTES)
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
