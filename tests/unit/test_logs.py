"""The access line's fast path renders exactly what the JSON formatter renders."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gateway import logs


def _fields() -> dict[str, object]:
    return {
        "requestId": "r-1",
        "keyId": None,
        "outcome": "allowed",
        "status": 200,
        "latencyMs": 1.234,
        "method": "GET",
        "path": '/a "quoted" \\ path/\u00e9\u2028\n',
        "clientIp": "198.51.100.4",
    }


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"keyId": "key_AbC123", "requestId": 'r"\\x', "status": 429, "latencyMs": 0.0},
        {"latencyMs": 12345.679, "clientIp": "2001:db8::1", "method": "PATCH"},
        {"latencyMs": 1e-3, "path": "/\x00\x7f\U0001f600"},
    ],
)
def test_access_line_is_what_the_formatter_renders(changes: dict[str, object]) -> None:
    fields = {**_fields(), **changes}
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", (), None)
    record.fields = fields
    for created in (1_700_000_000.0, 1_700_000_000.9995, 1_700_000_059.25):
        record.created = created
        line = logs.access_line(created, *fields.values())  # type: ignore[arg-type]
        assert line == logs.JsonFormatter().format(record)
        assert json.loads(line)["path"] == fields["path"]


def test_configured_writer_takes_the_fast_path_only_when_it_is_the_only_route() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    logs.configure_logging(stream=stream)
    try:
        writer = logs._writer
        assert writer is not None and writer.only_route_for_access()
        extra = logging.StreamHandler(io.StringIO())
        logs.ACCESS.addHandler(extra)
        assert not writer.only_route_for_access()
        logs.ACCESS.removeHandler(extra)
        logging.getLogger("gateway").addHandler(extra)
        assert not writer.only_route_for_access()
        logging.getLogger("gateway").removeHandler(extra)
        logs.log_access("r-2", "key_x", "allowed", 200, 0.5, "GET", "/p", "127.0.0.1")
        logging.getLogger("gateway").warning("after")
    finally:
        logs.stop_writer()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["request", "after"]
    assert lines[0]["logger"] == "gateway.access" and lines[0]["keyId"] == "key_x"
