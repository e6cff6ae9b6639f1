"""`gateway serve`'s proxy data path with the decision core switched off, for bench 2.

    python bench/proxy_core_off.py PORT UPSTREAM_URL

The same listener as `gateway serve` (gateway.faces.proxy on uvloop: client and upstream
protocols, pool, framing, limits) with a core that allows everything at once: no key
check, no rate limit, no usage record, no access line. The difference between this and
`gateway serve` is what the checks cost over HTTP.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import server
from gateway.errors import new_request_id
from gateway.faces.proxy import Proxy
from gateway.pipeline.core import Decision, RequestHead, render_error
from gateway.settings import load_settings


class NoChecks:
    """A decision core that decides nothing: every request is allowed as it is."""

    async def decide(self, head: RequestHead) -> Decision:
        return self.decide_now(head)

    def decide_now(self, head: RequestHead) -> Decision:
        request_id = new_request_id()
        return Decision(
            True,
            200,
            None,
            None,
            None,
            request_id,
            head.client[0] if head.client else "",
            time.perf_counter(),
            [(b"x-request-id", request_id.encode())],
        )

    def finish(self, decision: Decision, status: int, outcome: str | None = None) -> None:
        pass

    error_response = staticmethod(render_error)


async def main(port: int, upstream: str) -> None:
    settings = load_settings(None, upstream={"url": upstream})
    loop = asyncio.get_running_loop()
    proxy = Proxy(settings, NoChecks(), loop)
    sock = server.bind(f"127.0.0.1:{port}", "bench proxy (core off)")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await proxy.start(sock)
    await stop.wait()
    await proxy.stop(5.0)


if __name__ == "__main__":
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(int(sys.argv[1]), sys.argv[2]))
