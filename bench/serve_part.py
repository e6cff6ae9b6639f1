"""One part of `gateway serve`'s proxy stack, for bench/proxy_parts.py.

    python bench/serve_part.py PART PORT CONFIG

Same set-up as `gateway serve` (the native data path, gateway.faces.proxy, on uvloop; JSON
logging configured; one Runtime; the proxy's DecisionCore); PART chooses what runs:
- `core-off`: the data path alone, every request allowed at once (bench/proxy_core_off.py);
- `decide`: + the decision core's checks, nothing recorded after the answer;
- `usage`: + usage recording and metrics;
- `full`: + the access log (what `gateway serve` runs).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import server
from gateway.logs import ACCESS
from gateway.settings import load_settings

PARTS = ("core-off", "decide", "usage", "full")


async def main(part: str, port: int, config: str) -> None:
    from proxy_core_off import NoChecks

    from gateway.faces.proxy import Proxy
    from gateway.pipeline.core import DecisionCore
    from gateway.runtime import Runtime

    settings = load_settings(config)
    server.configure_logging()
    if part != "full":
        ACCESS.disabled = True
    runtime = Runtime(settings)
    await runtime.start()
    loop = asyncio.get_running_loop()
    core: object
    if part == "core-off":
        core = NoChecks()
    else:
        core = DecisionCore.for_listener(settings, "proxy", runtime=runtime)
        if part == "decide":
            core.finish = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    proxy = Proxy(settings, core, loop)
    sock = server.bind(f"127.0.0.1:{port}", "bench part")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await proxy.start(sock)
    try:
        await stop.wait()
    finally:
        await proxy.stop(5.0)
        await runtime.stop()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in PARTS:
        raise SystemExit(f"usage: serve_part.py {{{'|'.join(PARTS)}}} PORT CONFIG")
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
