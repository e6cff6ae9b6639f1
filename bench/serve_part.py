"""One part of `gateway serve`'s proxy stack, for bench/proxy_parts.py.

    python bench/serve_part.py PART PORT CONFIG

Same server set-up as `gateway serve` (gateway.server: uvicorn + httptools + uvloop,
JSON logging configured, one Runtime, one UpstreamApp); PART chooses what runs:
- `forward`: the forwarding stage alone (UpstreamApp, no middleware);
- `pipeline`: GatewayMiddleware + forwarding, no usage recording, no access log;
- `usage`: as `pipeline`, plus usage recording;
- `full`: as `usage`, plus the access log (what `gateway serve` runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import server
from gateway.logs import ACCESS
from gateway.settings import load_settings

PARTS = ("forward", "pipeline", "usage", "full")


def _record_nothing(*args: object) -> None:
    pass


async def main(part: str, port: int, config: str) -> None:
    from gateway.middleware import GatewayMiddleware
    from gateway.pipeline.forward import UpstreamApp
    from gateway.runtime import Runtime

    settings = load_settings(config)
    server.configure_logging()
    if part != "full":
        ACCESS.disabled = True
    runtime = Runtime(settings)
    upstream = UpstreamApp(settings)
    await runtime.start()
    await upstream.start()
    usage = runtime.usage
    record = usage.record
    if part in ("forward", "pipeline"):
        usage.record = _record_nothing  # type: ignore[method-assign]  # the middleware records nothing
    app = upstream if part == "forward" else GatewayMiddleware(upstream, runtime=runtime)
    sock = server.bind(f"127.0.0.1:{port}", "bench part")
    try:
        with server.Shutdown().installed() as shutdown:
            await server.run_listeners([(app, sock)], shutdown)
    finally:
        usage.record = record  # type: ignore[method-assign]
        await upstream.stop()
        await runtime.stop()


if __name__ == "__main__":
    part = sys.argv[1]
    assert part in PARTS, f"PART is one of {PARTS}"
    server._run(main(part, int(sys.argv[2]), sys.argv[3]))
