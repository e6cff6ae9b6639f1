"""JSON logs: one object per line (SPEC §14).

`JsonFormatter` renders every record the server logs; `configure_logging()` installs it
on the root logger behind a queue, so formatting and writing happen on a background
thread, not in the request. `log_access()` writes the one line per request on the
`gateway.access` logger: requestId, keyId, outcome, status, latencyMs, method, path
(never the query string, where a key could hide) and client IP. Key values never reach a
log: the pipeline logs key ids only.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import IO, Any

ACCESS = logging.getLogger("gateway.access")
_INFO = logging.INFO

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name != "fields":
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, separators=(",", ":"))


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + (
        f".{int(created % 1 * 1000):03d}Z"
    )


def access_enabled() -> bool:
    return ACCESS.isEnabledFor(_INFO)


def log_access(
    request_id: str,
    key_id: str | None,
    outcome: str,
    status: int,
    latency_ms: float,
    method: str,
    path: str,
    client_ip: str,
) -> None:
    """The one access line of a request (call only when `access_enabled()`)."""
    ACCESS.info(
        "request",
        extra={
            "fields": {
                "requestId": request_id,
                "keyId": key_id,
                "outcome": outcome,
                "status": status,
                "latencyMs": round(latency_ms, 3),
                "method": method,
                "path": path,
                "clientIp": client_ip,
            }
        },
    )


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread as they are (the JSON formatter runs there)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None
        return record


_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: str | int = "INFO", stream: IO[str] | None = None) -> None:
    """JSON lines on `stream` (stderr) for every logger, written by a background thread."""
    global _listener
    if _listener is not None:
        _listener.stop()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_QueueHandler(records))
    root.setLevel(level)
    _listener = logging.handlers.QueueListener(records, handler, respect_handler_level=True)
    _listener.start()
    atexit.register(_stop_listener)


def _stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
