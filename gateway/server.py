"""`gateway serve` and `gateway demo`: the proxy and admin listeners in one process (SPEC §9, §10).

Both listeners run on uvicorn (httptools, uvloop) as two `uvicorn.Server`s in one event
loop, sharing one `Runtime` that is started before they accept anything and stopped
after the last in-flight request finished (which flushes the usage buffer).

SIGTERM / SIGINT: both servers stop accepting, in-flight requests get up to
`GRACE_SECONDS` to finish, then the upstream client and the runtime close and the
process exits 0. A second signal stops waiting for in-flight requests.

Startup problems surface as exceptions the CLI turns into one line and an exit code:
`ConfigError` (exit 2), `StoreError` and `OSError` such as a port in use (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from gateway.fdwatch import FdWatch
from gateway.settings import ConfigError, Settings, load_settings, parse_host_port

log = logging.getLogger("gateway")

GRACE_SECONDS = 30.0


# --- sockets ---------------------------------------------------------------------------


def bind(listen: str, purpose: str) -> socket.socket:
    """A listening TCP socket on `listen` ("HOST:PORT"); OSError with a clear message.

    Bound here rather than by uvicorn so that a port in use is one readable error
    before anything starts (uvicorn would log and call sys.exit itself). It starts
    listening only when its server starts serving, so a connection that succeeds means
    the gateway is ready (and a SIGTERM from then on is handled gracefully).
    """
    host, port = parse_host_port(listen)
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name, e.g. localhost
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on {listen} for the {purpose}: {reason}") from None
    sock.setblocking(False)
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- logging ---------------------------------------------------------------------------


# Below this many file descriptors a gateway is easy to starve (slow clients, bursts).
LOW_FD_LIMIT = 4096


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as nginx's worker_rlimit_nofile or
    Go's runtime do): the default soft limit of 1024 lets about a thousand slow clients
    take every descriptor. Returns the soft limit now in force; logs it when still low."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < LOW_FD_LIMIT:
        log.warning(
            "only %d file descriptors available (ulimit -n): raise the hard limit for many "
            "concurrent clients",
            soft,
        )
    return soft


def configure_logging() -> None:
    """JSON lines on stderr for the gateway's logs; uvicorn's access log stays off and its
    own chatter is limited to warnings (the gateway logs one line per request itself)."""
    from gateway.logs import configure_logging as configure

    configure()
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True


# --- running listeners -----------------------------------------------------------------


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled once for all listeners (by `run`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: Any, settings: Settings | None = None) -> uvicorn.Config:
    from gateway.admin.edge import edge_protocol

    server = (settings or Settings()).server
    return uvicorn.Config(
        app,
        # SPEC §7 edge limits while the request head is read (431, 408); uvicorn's own
        # keep-alive timer closes idle connections after server.keepalive_timeout.
        http=edge_protocol(server.max_header_bytes, server.max_headers, server.header_timeout),
        timeout_keep_alive=server.keepalive_timeout,
        lifespan="off",  # resources are opened and closed by `run`, in order
        access_log=False,
        log_config=None,
        # The gateway decides who the client is (server.trusted_proxies), not uvicorn.
        proxy_headers=False,
        # Upstream answers pass through with their own Date/Server headers.
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )


class Shutdown:
    """SIGTERM/SIGINT handling for the whole process, installed before anything starts.

    The first signal asks every listener to stop accepting and finish in-flight requests
    (or, during startup, to skip serving); a second one stops waiting for them."""

    def __init__(self) -> None:
        self.signals = 0
        self.servers: list[uvicorn.Server] = []
        self.event: asyncio.Event | None = None  # set on the first signal (for non-uvicorn)
        self.proxies: list[Any] = []  # gateway.faces.proxy.Proxy listeners

    @property
    def requested(self) -> bool:
        return self.signals > 0

    def __call__(self) -> None:
        self.signals += 1
        self.stop_servers(force=self.signals > 1)

    def stop_servers(self, *, force: bool = False) -> None:
        if self.event is not None:
            self.event.set()
        for server in self.servers:
            server.should_exit = True
            server.force_exit = server.force_exit or force
        for proxy in self.proxies:
            proxy.begin_stop(force=force)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Shutdown]:
        loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self)
        try:
            yield self
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


async def run_listeners(
    apps: Sequence[tuple[Any, socket.socket]],
    shutdown: Shutdown,
    *,
    on_ready: Callable[[], None] | None = None,
    settings: Settings | None = None,
) -> None:
    """Serve each (app, socket) until `shutdown` is signalled, then stop all gracefully."""
    servers = [_Server(_config(app, settings)) for app, _ in apps]
    shutdown.servers = list(servers)
    tasks = [
        asyncio.ensure_future(server.serve(sockets=[sock]))
        for server, (_, sock) in zip(servers, apps, strict=True)
    ]
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks) or shutdown.requested:
            break
        await asyncio.sleep(0.01)
    else:
        if on_ready is not None:
            on_ready()
    # One listener ending (e.g. it failed) ends the others too.
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    shutdown.stop_servers()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        exc = task.exception()
        if exc is not None:
            raise exc


async def run_gateway(
    settings: Settings,
    proxy_sock: socket.socket,
    admin_sock: socket.socket,
    *,
    extra: Sequence[tuple[Any, socket.socket]] = (),
    authz_sock: socket.socket | None = None,
    on_started: Callable[[Any], Awaitable[None]] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Start the runtime, serve the proxy and admin listeners (and `extra` ones, and the
    forward-auth listener on `authz_sock`), stop.

    The proxy listener is the native HTTP/1.1 data path (gateway.faces.proxy); the admin
    listener and `extra` ones are ASGI apps on uvicorn."""
    from gateway.admin.app import create_admin_app
    from gateway.faces.proxy import Proxy
    from gateway.pipeline.core import DecisionCore
    from gateway.runtime import Runtime

    runtime = Runtime(settings)
    fd_watch = FdWatch()
    core = DecisionCore.for_listener(settings, "proxy", runtime=runtime)
    proxy = Proxy(settings, core, asyncio.get_running_loop())
    authz_server = None
    with Shutdown().installed() as shutdown:
        shutdown.proxies.append(proxy)
        try:
            await runtime.start()
            fd_watch.start()
            log_store(settings)
            if on_started is not None:
                await on_started(runtime)
            admin = create_admin_app(runtime)
            listeners = [*extra, (admin, admin_sock)]
            if not shutdown.requested:  # a signal during startup: stop without serving
                if authz_sock is not None:
                    authz_server = authz_listener(settings, runtime)
                    await authz_server.start(authz_sock)
                await proxy.start(proxy_sock)
                await run_listeners(listeners, shutdown, on_ready=on_ready, settings=settings)
        finally:
            # In-flight requests finish (up to GRACE_SECONDS) before usage is flushed.
            stopping = [proxy.stop(GRACE_SECONDS)]
            if authz_server is not None:
                stopping.append(authz_server.stop(GRACE_SECONDS))
            await asyncio.gather(*stopping)
            await fd_watch.stop()
            await runtime.stop()  # flushes buffered usage
            socks = [proxy_sock, admin_sock, *(sock for _, sock in extra)]
            for sock in [*socks, authz_sock] if authz_sock is not None else socks:
                sock.close()
    log.info("gateway stopped")


def log_store(settings: Settings) -> None:
    """Say which store this gateway opened: its absolute path, or its URL (no password)."""
    from gateway.urls import store_location

    log.info("key store: %s", store_location(settings.storage.url))


def _run(main: Awaitable[None]) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)  # type: ignore[arg-type]


# --- gateway serve ---------------------------------------------------------------------


def serve(settings: Settings) -> None:
    """Run the proxy and admin listeners (and server.authz_listen, if set) until
    SIGTERM/SIGINT (blocking)."""
    if not settings.upstream.url:
        raise ConfigError(
            "upstream.url is not set: pass --upstream URL, set url in the [upstream] section "
            "of the config file, or set GATEWAY_UPSTREAM__URL"
        )
    configure_logging()
    raise_fd_limit()
    proxy_sock = bind(settings.server.listen, "proxy listener (server.listen)")
    socks = [proxy_sock]
    try:
        admin_sock = bind(settings.server.admin_listen, "admin listener (server.admin_listen)")
        socks.append(admin_sock)
        authz_sock = None
        if settings.server.authz_listen:
            authz_sock = bind(
                settings.server.authz_listen, "forward-auth listener (server.authz_listen)"
            )
    except OSError:
        for sock in socks:
            sock.close()
        raise

    # Taken now: the listeners own (and close) their sockets once they run.
    proxy_address, admin_address = address_of(proxy_sock), address_of(admin_sock)
    authz_address = address_of(authz_sock) if authz_sock is not None else None
    scheme = "https" if settings.server.tls_cert else "http"

    def ready() -> None:
        log.info(
            "gateway listening: proxy %s://%s -> %s, admin http://%s%s",
            scheme,
            proxy_address,
            settings.upstream.url,
            admin_address,
            f", forward auth {scheme}://{authz_address}" if authz_address else "",
        )

    def run(on_ready: Callable[[], None]) -> None:
        _run(
            run_gateway(settings, proxy_sock, admin_sock, authz_sock=authz_sock, on_ready=on_ready)
        )

    if settings.server.workers == 1:
        run(ready)
        return
    run_workers(settings, run, ready, [*socks, authz_sock])


def run_workers(
    settings: Settings,
    run: Callable[[Callable[[], None]], None],
    ready: Callable[[], None],
    socks: Sequence[socket.socket | None],
) -> None:
    """`run` in `server.workers` processes on the same sockets (gateway/workers.py)."""
    from gateway.secret import resolve_secret
    from gateway.workers import Supervisor

    # Once, before the workers: with SQLite and no GATEWAY_SECRET the first start creates
    # the secret file, and N workers racing to create it could read it half-written.
    resolve_secret(settings)
    count = settings.server.workers

    def work(index: int, tell_supervisor: Callable[[], None]) -> None:
        def on_ready() -> None:
            tell_supervisor()
            if index == 0:
                ready()

        run(on_ready)

    def preflight() -> None:
        from gateway.runtime import key_service

        async def open_once() -> None:
            async with key_service(settings):
                pass

        asyncio.run(open_once())

    code = Supervisor(count, work, preflight=preflight).run()
    for sock in socks:
        if sock is not None:
            sock.close()
    log.info("gateway supervisor stopped")
    if code:
        raise SystemExit(code)


# --- gateway authz ---------------------------------------------------------------------

DEFAULT_AUTHZ_LISTEN = "127.0.0.1:8002"


def authz(settings: Settings, *, admin_listen: str | None = None) -> None:
    """Run the forward-auth listener alone until SIGTERM/SIGINT (blocking; SPEC §15).
    With `admin_listen`, the admin listener (admin API, dashboard, /metrics, /healthz,
    /readyz) runs in the same process too, on the same resources."""
    configure_logging()
    raise_fd_limit()
    listen = settings.server.authz_listen or DEFAULT_AUTHZ_LISTEN
    sock = bind(listen, "forward-auth listener (server.authz_listen)")
    admin_sock = None
    if admin_listen is not None:
        try:
            admin_sock = bind(admin_listen, "admin listener (--admin-listen)")
        except OSError:
            sock.close()
            raise
    authz_address = address_of(sock)
    admin_address = address_of(admin_sock) if admin_sock is not None else None

    def ready() -> None:
        scheme = "https" if settings.server.tls_cert else "http"
        log.info(
            "gateway authz listening: %s://%s%s",
            scheme,
            authz_address,
            f", admin http://{admin_address}" if admin_address else "",
        )

    def run(on_ready: Callable[[], None]) -> None:
        _run(run_authz(settings, sock, admin_sock=admin_sock, on_ready=on_ready))

    if settings.server.workers == 1:
        run(ready)
        return
    run_workers(settings, run, ready, [sock, admin_sock])


async def run_authz(
    settings: Settings,
    sock: socket.socket,
    *,
    admin_sock: socket.socket | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Start the decision core, answer forward-auth requests (and serve the admin
    listener on `admin_sock`) until a signal, stop."""
    from gateway.runtime import Runtime

    runtime = Runtime(settings)
    fd_watch = FdWatch()
    server = None
    with Shutdown().installed() as shutdown:
        try:
            await runtime.start()
            fd_watch.start()
            log_store(settings)
            server = authz_listener(settings, runtime)
            if not shutdown.requested:
                await server.start(sock)
                if admin_sock is not None:
                    from gateway.admin.app import create_admin_app

                    admin = create_admin_app(runtime)
                    await run_listeners(
                        [(admin, admin_sock)], shutdown, on_ready=on_ready, settings=settings
                    )
                else:
                    if on_ready is not None:
                        on_ready()
                    assert shutdown.event is not None
                    await shutdown.event.wait()
        finally:
            if server is not None:
                await server.stop(GRACE_SECONDS)
            await fd_watch.stop()
            await runtime.stop()  # flushes buffered usage
            sock.close()
            if admin_sock is not None:
                admin_sock.close()
    log.info("gateway authz stopped")


def authz_listener(settings: Settings, runtime: Any) -> Any:
    """The forward-auth listener (not yet serving) on the process's shared resources."""
    from gateway.faces.authz import AuthzFace
    from gateway.faces.authz_listener import AuthzServer, EdgeLimits
    from gateway.faces.proxy.server import tls_context
    from gateway.pipeline.core import DecisionCore

    server = settings.server
    tls = None
    if server.tls_cert and server.tls_key:
        tls = tls_context(server.tls_cert, server.tls_key)
    core = DecisionCore.for_listener(settings, "authz", runtime=runtime)
    return AuthzServer(AuthzFace(core), EdgeLimits.from_settings(settings), tls)


# --- gateway demo ----------------------------------------------------------------------


def demo(listen: str | None = None, admin_listen: str | None = None) -> None:
    """An echo upstream behind a gateway on a temporary SQLite store, with demo keys.

    Listens on `listen` / `admin_listen` (the --listen / --admin-listen flags), else on
    GATEWAY_SERVER__LISTEN / GATEWAY_SERVER__ADMIN_LISTEN, else on 127.0.0.1:8000 / :8001.
    An address it cannot listen on is a ConfigError (exit 2) naming the flag."""
    overrides = {
        name: value
        for name, value in (("listen", listen), ("admin_listen", admin_listen))
        if value is not None
    }
    base = load_settings(None, server=overrides) if overrides else load_settings(None)
    configure_logging()
    socks: list[socket.socket] = []
    try:
        for address, flag, purpose in (
            (base.server.listen, "--listen", "proxy listener"),
            (base.server.admin_listen, "--admin-listen", "admin listener"),
        ):
            try:
                socks.append(bind(address, f"demo's {purpose}"))
            except OSError as exc:
                env = "GATEWAY_SERVER__" + flag.removeprefix("--").replace("-", "_").upper()
                raise ConfigError(
                    f"{exc.strerror or exc}. Choose another address with {flag} HOST:PORT "
                    f"(or {env})."
                ) from None
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    workdir = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    try:
        _run(_demo(workdir, *socks))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _demo(workdir: Path, proxy_sock: socket.socket, admin_sock: socket.socket) -> None:
    from gateway.demo_upstream import echo_app
    from gateway.urls import sqlite_url

    echo_sock = bind("127.0.0.1:0", "demo echo upstream")
    proxy, admin, echo = address_of(proxy_sock), address_of(admin_sock), address_of(echo_sock)
    settings = load_settings(
        None,
        server={"listen": proxy, "admin_listen": admin},
        upstream={"url": f"http://{echo}"},
        storage={"url": sqlite_url(workdir / "gateway.db")},
    )
    keys: dict[str, tuple[str, str]] = {}

    async def create_keys(runtime: Any) -> None:
        from gateway.keys.model import KeyCreate, parse_body

        for scope, name in (("read", "demo read key"), ("admin", "demo admin key")):
            body = parse_body(KeyCreate, {"name": name, "scope": scope})
            key, value = await runtime.service.create(body, actor="cli")
            keys[scope] = (key.id, value)

    def ready() -> None:
        banner = demo_banner(
            proxy=proxy, admin=admin, echo=echo, store=workdir / "gateway.db", keys=keys
        )
        print(banner, flush=True)

    await run_gateway(
        settings,
        proxy_sock,
        admin_sock,
        extra=[(echo_app, echo_sock)],
        on_started=create_keys,
        on_ready=ready,
    )
    print("Demo stopped; its temporary store was removed.", file=sys.stderr, flush=True)


def demo_banner(
    *,
    proxy: str,
    admin: str,
    echo: str,
    store: Path,
    keys: dict[str, tuple[str, str]],
) -> str:
    read_id, read_value = keys["read"]
    admin_id, admin_value = keys["admin"]
    lines = ["", "Gateway demo is running. Press Ctrl-C to stop it.", ""]
    lines += [
        f"  Proxy       http://{proxy}  (forwards to the built-in echo upstream http://{echo})",
        f"  Admin API   http://{admin}/v1/keys",
        f"  Dashboard   http://{admin}/  (sign in with the admin key)",
        f"  Store       {store}  (temporary, removed on exit)",
        "",
        f"  Read key    {read_value}  ({read_id}, scope read)",
        f"  Admin key   {admin_value}  ({admin_id}, scope admin)",
        "  These values are shown only once; the store keeps only their HMAC.",
        "",
        "Try it:",
        "",
        "  # allowed: the echo upstream shows what it received (no key among it)",
        f'  curl -H "Authorization: Bearer {read_value}" http://{proxy}/hello',
        "",
        "  # rejected: no key -> 401 MISSING_API_KEY",
        f"  curl -i http://{proxy}/hello",
        "",
        "  # rejected: a read key cannot POST -> 403 INSUFFICIENT_SCOPE",
        f'  curl -i -X POST -H "Authorization: Bearer {read_value}" http://{proxy}/hello',
        "",
        "  # admin API: list the keys",
        f'  curl -H "Authorization: Bearer {admin_value}" http://{admin}/v1/keys',
        "",
    ]
    return "\n".join(lines)
