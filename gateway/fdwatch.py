"""Say when the process runs out of file descriptors (SPEC §13, issue 8 point 2).

Running out is otherwise silent: the event loop's accept drops new connections, and only
the code that happens to open something (an upstream or Redis connection) sees EMFILE —
the proxy answers that 503 SERVICE_UNAVAILABLE. This watcher counts the open descriptors
once a second and logs an error while more than `THRESHOLD` of the limit are in use (or
none is left even to count them), at most every `REPEAT_SECONDS`, with the numbers an
operator needs; `gateway_open_fds` would be the metric, the log line is the alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time

log = logging.getLogger("gateway")

THRESHOLD = 0.9
INTERVAL_SECONDS = 1.0
REPEAT_SECONDS = 10.0


def open_fds() -> int | None:
    """Descriptors open in this process; None when none is left to count them."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir used
    except OSError:
        return None


def fd_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


class FdWatch:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._last_warning = -REPEAT_SECONDS

    def check(self) -> bool:
        """One look; True (and an error logged, rate-limited) when near the limit."""
        used, limit = open_fds(), fd_limit()
        exhausted = used is None or used >= THRESHOLD * limit
        now = time.monotonic()
        if exhausted and now - self._last_warning >= REPEAT_SECONDS:
            self._last_warning = now
            log.error(
                "out of file descriptors: %s of %d in use; new connections are refused "
                "(raise ulimit -n, or shorten server.header_timeout / keepalive_timeout)",
                "all" if used is None else used,
                limit,
            )
        return exhausted

    def start(self) -> None:
        if os.path.isdir("/proc/self/fd") and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL_SECONDS)
            self.check()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
