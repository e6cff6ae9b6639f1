"""JSON logs: one object per line (SPEC §14).

`JsonFormatter` renders every record the server logs; `configure_logging()` installs it
on the root logger behind a queue, so formatting and writing happen on a background
thread, not in the request. `log_access()` writes the one line per request on the
`gateway.access` logger: requestId, keyId, outcome, status, latencyMs, method, path
(never the query string, where a key could hide) and client IP. Key values never reach a
log: the pipeline logs key ids only.

When the only place an access line can go is the writer `configure_logging()` installed
(the `gateway serve` case), `log_access()` renders the line itself — the same JSON the
formatter would produce — and queues the string: no LogRecord, and the writer thread
only joins and writes. Measured under `wrk` on the 2-core machine (bench/proxy_http.py),
a LogRecord per request formatted on the thread cost ~140-180 µs of process CPU per
request (its creation, the formatter holding the GIL, and the hand-offs); any other
set-up (handlers added by an embedding app or a test) takes the ordinary logging path.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import IO, Any

from gateway.keys.format import redact_keys

ACCESS = logging.getLogger("gateway.access")
_GATEWAY = logging.getLogger("gateway")
_ROOT = logging.getLogger()
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
    return _second(int(created)) + f".{int(created % 1 * 1000):03d}Z"


_last_second: tuple[int, str] = (-1, "")


def _second(second: int) -> str:
    # strftime+gmtime once per second rather than once per line (access lines).
    global _last_second
    if _last_second[0] != second:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return _last_second[1]


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
    """The one access line of a request (call only when `access_enabled()`). A key value
    in the path is written as `[redacted]` (SPEC §14)."""
    path = redact_keys(path)
    latency = round(latency_ms, 3)
    writer = _writer
    if writer is not None and writer.only_route_for_access():
        line = access_line(
            time.time(), request_id, key_id, outcome, status, latency, method, path, client_ip
        )
        writer.records.put(line)
        return
    fields = {
        "requestId": request_id,
        "keyId": key_id,
        "outcome": outcome,
        "status": status,
        "latencyMs": latency,
        "method": method,
        "path": path,
        "clientIp": client_ip,
    }
    ACCESS.info("request", extra={"fields": fields})


# json's own C string encoder: the same escaping and quoting as json.dumps.
_quote = json.encoder.encode_basestring_ascii
_ACCESS_LINE = (
    '{"time":"%s","level":"info","logger":"gateway.access","message":"request",'
    '"requestId":%s,"keyId":%s,"outcome":%s,"status":%d,"latencyMs":%r,"method":%s,'
    '"path":%s,"clientIp":%s}'
)


def access_line(
    created: float,
    request_id: str,
    key_id: str | None,
    outcome: str,
    status: int,
    latency_ms: float,
    method: str,
    path: str,
    client_ip: str,
) -> str:
    """Exactly the line `JsonFormatter` renders for the access record of these fields,
    built with one format operation (json.dumps would build an encoder per call, ~7 µs)."""
    return _ACCESS_LINE % (
        _timestamp(created),
        _quote(request_id),
        "null" if key_id is None else _quote(key_id),
        _quote(outcome),
        status,
        latency_ms,
        _quote(method),
        _quote(path),
        _quote(client_ip),
    )


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread as they are (the JSON formatter runs there)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None
        return record


class _BatchWriter(threading.Thread):
    """Formats queued records (and passes queued ready lines through) and writes them in
    batches: one write() and flush per batch, and at most one wake-up per `pause` under
    load (a per-record wake-up, write and flush measured ~270 µs per request on a busy
    2-core machine)."""

    def __init__(
        self,
        records: queue.SimpleQueue,
        handler: logging.Handler,
        queue_handler: logging.Handler,
        pause: float = 0.01,
    ) -> None:
        super().__init__(name="gateway-log-writer", daemon=True)
        self.records = records
        self.handler = handler
        self.queue_handler = queue_handler
        self.pause = pause
        self._stopping = threading.Event()

    def only_route_for_access(self) -> bool:
        """True when an access line would reach this writer's handler and nothing else:
        no handler or filter on `gateway.access` or `gateway`, ours alone on the root."""
        handlers = _ROOT.handlers
        return (
            len(handlers) == 1
            and handlers[0] is self.queue_handler
            and not ACCESS.handlers
            and not _GATEWAY.handlers
            and not ACCESS.filters
            and not _GATEWAY.filters
            and not _ROOT.filters
            and not self.queue_handler.filters
            and ACCESS.propagate
            and _GATEWAY.propagate
            and self.handler.level <= _INFO
            and self.queue_handler.level <= _INFO
        )

    def run(self) -> None:
        while True:
            record = self.records.get()
            batch = [record]
            while len(batch) < 10_000:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in batch)
            self._write([item for item in batch if item is not None])
            if stop:
                return
            time.sleep(self.pause)

    def _write(self, batch: list[logging.LogRecord | str]) -> None:
        handler = self.handler
        lines = []
        for record in batch:
            if isinstance(record, str):  # an access line, already rendered
                lines.append(record)
                continue
            if record.levelno < handler.level:
                continue
            try:
                lines.append(handler.format(record))
            except Exception:
                handler.handleError(record)
        if not lines or not isinstance(handler, logging.StreamHandler):
            return
        try:
            handler.stream.write("\n".join(lines) + "\n")
            handler.stream.flush()
        except Exception:
            last = batch[-1]
            if isinstance(last, str):
                last = logging.makeLogRecord({"name": "gateway.access", "msg": "request"})
            handler.handleError(last)

    def stop(self) -> None:
        self.records.put(None)
        self.join(timeout=5)


_writer: _BatchWriter | None = None


def configure_logging(level: str | int = "INFO", stream: IO[str] | None = None) -> None:
    """JSON lines on `stream` (stderr) for every logger, written by a background thread."""
    global _writer
    stop_writer()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    queue_handler = _QueueHandler(records)  # type: ignore[arg-type]
    root.addHandler(queue_handler)
    root.setLevel(level)
    _writer = _BatchWriter(records, handler, queue_handler)
    _writer.start()
    atexit.register(stop_writer)


def stop_writer() -> None:
    """Write what is queued and stop the writer thread (at exit, or to reconfigure)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None
