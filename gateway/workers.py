"""`server.workers` = N: N processes serving the same listening sockets (SPEC §13).

The supervisor (the process `gateway serve` started as) binds the sockets, creates the
shared counter table (pipeline/ratelimit/shared.py) and forks N workers. Every worker
inherits the same listening sockets — one accept queue per listener, so a connection
waits for whichever worker is free, and a dying worker strands nothing in a queue of its
own (unlike per-worker SO_REUSEPORT sockets) — and runs the usual single-process server
on them with its own event loop, store connection and key cache.

- Limits stay exact across workers: `memory://` counters and every listener's
  failed-attempt throttle live in the shared table; Redis counters are shared anyway.
- Revokes reach every worker as they reach every replica: each worker follows the
  store's change feed (SQLite: the `changes` table; Redis: pub/sub) and registers with
  the store as a running gateway, so key commands wait for every worker.
- /metrics (admin listener) sums every worker's counts: the supervisor points
  prometheus_client's multiprocess mode at a temporary folder, and each worker adds its
  pending request tallies to it every second.
- Before any worker, a short-lived child opens the store once (an unreachable store, a
  wrong secret: one message and the usual exit code, not one per worker).
- A worker that dies is replaced (its index and log lines stay); five quick deaths in a
  row, or a worker failing before any worker was ever ready, stop the supervisor with
  that worker's exit code.
- SIGTERM / SIGINT to the supervisor: every worker gets SIGTERM and stops gracefully
  (in-flight requests finish); a second signal is passed on too, which makes the
  workers stop waiting. Workers run in their own process group, so a terminal's Ctrl-C
  reaches them through the supervisor only, once; and if the supervisor itself is
  killed, every worker gets SIGTERM (PR_SET_PDEATHSIG) and stops gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable

log = logging.getLogger("gateway")

QUICK_SECONDS = 2.0  # a worker that dies sooner than this after its start died "quickly"
QUICK_LIMIT = 5  # that many quick deaths in a row: give up
RESTART_DELAY = 0.2
PR_SET_PDEATHSIG = 1
METRICS_FLUSH_SECONDS = 1.0
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as gateway.metrics (not imported here)


def _multiprocess_metrics() -> str | None:
    """A folder for every worker's metrics (prometheus_client multiprocess mode), set in
    the environment the workers inherit; None if prometheus_client is loaded already
    (then each worker's /metrics shows its own counts only)."""
    if "prometheus_client" in sys.modules:
        log.warning("metrics: prometheus_client loaded before the workers; /metrics per worker")
        return None
    folder = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[MULTIPROCESS_ENV] = folder
    return folder


def _flush_metrics_every(seconds: float) -> None:
    """In a worker's loop: add the pending request tallies to the shared metrics files
    every `seconds`, so a scrape answered by another worker sees them."""
    if not os.environ.get(MULTIPROCESS_ENV):
        return
    from gateway import metrics

    loop = asyncio.get_running_loop()

    def tick() -> None:
        metrics.TALLY.flush()
        loop.call_later(seconds, tick)

    loop.call_later(seconds, tick)


def _stop_with_parent(parent: int) -> None:
    """SIGTERM this worker when the supervisor dies, however it dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above: stop now
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Forks `count` workers running `work(index, ready)` and keeps them running."""

    def __init__(
        self,
        count: int,
        work: Callable[[int, Callable[[], None]], None],
        *,
        preflight: Callable[[], None] | None = None,
    ) -> None:
        self.count = count
        self.work = work
        self.preflight = preflight
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
        self.signals = 0
        self.ever_ready = False
        self.pid = os.getpid()
        self._ready_read, self._ready_write = os.pipe()
        os.set_blocking(self._ready_read, False)

    def run(self) -> int:
        """Until every worker stopped after a signal (0), or the workers keep failing
        (their exit code). Blocking; call before any event loop or thread exists."""
        if self.preflight is not None:
            code = self._run_preflight(self.preflight)
            if code:
                return code
        metrics_dir = _multiprocess_metrics()  # before anything imports prometheus_client
        from gateway.pipeline.ratelimit import shared as shared_counters

        table = shared_counters.create_table()
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.count):
                if not self.signals:
                    self._spawn(index, table)
            log.info("gateway supervisor: %d workers (pids %s)", self.count, self.pids())
            return self._watch(table)
        finally:
            if os.getpid() == self.pid:  # a failing worker unwinds through here too
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                os.close(self._ready_read)
                os.close(self._ready_write)
                if metrics_dir is not None:
                    shutil.rmtree(metrics_dir, ignore_errors=True)
                    os.environ.pop(MULTIPROCESS_ENV, None)

    def _run_preflight(self, check: Callable[[], None]) -> int:
        """`check()` in a child of its own (so that no thread or loop it starts outlives
        it in this process): a store that cannot be opened is reported once, with the
        usual message and exit code, rather than once per worker. Its exit code."""
        pid = self._fork()
        if pid == 0:
            check()  # a failure raises out of here, as in a single process
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 1

    def _fork(self) -> int:
        from gateway import logs

        # No thread may run across a fork (a lock it holds would stay locked in the
        # child): the log writer thread is flushed and stopped, and started again on
        # both sides.
        configured = logs._writer is not None
        logs.stop_writer()
        pid = os.fork()
        if configured:
            logs.configure_logging()
        return pid

    def pids(self) -> list[int]:
        return sorted(self.children)

    def _on_signal(self, signum: int, frame: object) -> None:
        if os.getpid() != self.pid:  # a worker between fork and its own handlers
            os._exit(0)
        self.signals += 1
        self._tell_all(signal.SIGTERM)

    def _tell_all(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _spawn(self, index: int, table: object) -> None:
        pid = self._fork()
        if pid == 0:  # the worker
            self._become_worker(index, table)
        self.children[pid] = (index, time.monotonic())

    def _become_worker(self, index: int, table: object) -> None:
        from gateway.pipeline.ratelimit import shared as shared_counters

        os.setpgid(0, 0)  # the terminal's Ctrl-C reaches the supervisor only
        _stop_with_parent(self.pid)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # the worker's loop installs its own
        os.close(self._ready_read)
        shared_counters.attach(table)  # type: ignore[arg-type]
        write = self._ready_write

        def ready() -> None:  # called in the worker's event loop
            with contextlib.suppress(OSError):
                os.write(write, b"r")
            _flush_metrics_every(METRICS_FLUSH_SECONDS)

        # A startup failure raises out of here and ends this process the way a single
        # process ends (one message, the documented exit code).
        self.work(index, ready)
        os._exit(0)

    def _watch(self, table: object) -> int:
        quick = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            self._drain_ready()
            entry = self.children.pop(pid, None)
            if entry is None:
                continue
            index, started = entry
            code = os.waitstatus_to_exitcode(status)
            if self.signals:
                continue  # stopping: wait for the others
            if not self.ever_ready and code != 0:
                log.error("gateway worker %d failed to start (exit %s); stopping", index, code)
                self._stop_all()
                return code if code > 0 else 1
            quick = quick + 1 if time.monotonic() - started < QUICK_SECONDS else 0
            if quick >= QUICK_LIMIT:
                log.error("gateway workers keep dying (last exit %s); stopping", code)
                self._stop_all()
                return code if code > 0 else 1
            log.warning(
                "gateway worker %d (pid %d) exited (%s); starting another", index, pid, code
            )
            if quick:
                time.sleep(RESTART_DELAY * quick)
            if not self.signals:
                self._spawn(index, table)
        return 0

    def _drain_ready(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            if os.read(self._ready_read, 4096):
                self.ever_ready = True

    def _stop_all(self) -> None:
        self.signals += 1
        self._tell_all(signal.SIGTERM)
        while self.children:
            try:
                pid, _ = os.wait()
            except ChildProcessError:
                break
            self.children.pop(pid, None)
