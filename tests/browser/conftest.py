"""Real processes for the dashboard tests: an echo upstream, `gateway serve` in front of it
(proxy + admin listeners, one SQLite file) and a headless Debian Chromium driven by
Playwright. Nothing is mocked; readiness is polled, never slept for.

Without /usr/bin/chromium (or `chromium` on PATH) the tests skip, and fail under
GATEWAY_REQUIRE_SERVICES=1. Playwright never downloads a browser here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET, need

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_SCRIPT = ROOT / "tests" / "e2e" / "upstream.py"
# The README's screenshots are rewritten only on request (GATEWAY_UPDATE_SCREENSHOTS=1);
# otherwise they go to the ignored tests/artifacts/ so a test run leaves the tree clean.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1"
    else ROOT / "tests" / "artifacts" / "screenshots"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:  # keep polling; report the last one
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f": {last!r}" if last else ""))


@dataclass
class Gateway:
    """The running gateway: its URLs, the admin key, and helpers to use the proxy."""

    admin_url: str
    proxy_url: str
    admin_key: str
    env: dict[str, str]
    log_path: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def proxy(self, key: str, path: str = "/things") -> httpx.Response:
        return httpx.get(self.proxy_url + path, headers={"X-API-Key": key}, timeout=10)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        return httpx.request(method, self.admin_url + path, headers=headers, timeout=10, **kwargs)

    def cli(self, *args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "keys", *args, "--json"],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


@contextlib.contextmanager
def launch_gateway(work: Path) -> Iterator[Gateway]:
    """`gateway serve` on free ports over a new SQLite file in `work`, with an admin key."""
    env = {
        **os.environ,
        "GATEWAY_SECRET": TEST_SECRET,
        "GATEWAY_STORAGE__URL": f"sqlite:///{work / 'gateway.db'}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("GATEWAY_CONFIG", None)
    log = work / "processes.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        create = ["keys", "create", "--name", "Dashboard admin", "--scope", "admin", "--json"]
        created = subprocess.run(
            [sys.executable, "-m", "gateway", *create],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=True,
        )
        admin_key = json.loads(created.stdout)["secret"]

        admin_port = free_port()
        admin_url = f"http://127.0.0.1:{admin_port}"
        upstream_port = free_port()
        upstream = [sys.executable, str(UPSTREAM_SCRIPT), str(upstream_port)]
        procs.append(_start(upstream, env, log))
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        wait_until(lambda: _answers(upstream_url + "/ping"), START_TIMEOUT, "the upstream")
        proxy_port = free_port()
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        serve = [sys.executable, "-m", "gateway", "serve"]
        serve += ["--listen", f"127.0.0.1:{proxy_port}"]
        serve += ["--admin-listen", f"127.0.0.1:{admin_port}", "--upstream", upstream_url]
        procs.append(_start(serve, env, log))

        def ready() -> bool:
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"a process exited early:\n{log.read_text()}")
            if not _answers(admin_url + "/healthz"):
                return False
            return _answers(proxy_url + "/")

        wait_until(ready, START_TIMEOUT, "the gateway to listen")
        yield Gateway(admin_url, proxy_url, admin_key, env, log, procs)
    finally:
        for proc in reversed(procs):
            _stop(proc)


# Package scope: Playwright's sync API keeps an event loop running in this thread while
# it is alive, which would break every later test that calls asyncio.run().
@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway most tests share (their keys have unique names)."""
    with launch_gateway(tmp_path_factory.mktemp("browser-gateway")) as running:
        yield running


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    executable = need("chromium", shutil.which("chromium") or _existing("/usr/bin/chromium"))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def _existing(path: str) -> str | None:
    return path if Path(path).exists() else None


@pytest.fixture
def context(browser: Any, gateway: Gateway) -> Iterator[Any]:
    """A fresh browser profile (empty sessionStorage) that may use the clipboard."""
    ctx = browser.new_context(
        base_url=gateway.admin_url,
        viewport={"width": 1280, "height": 800},
        permissions=["clipboard-read", "clipboard-write"],
    )
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def signed_in(page: Any, gateway: Gateway) -> Any:
    """The dashboard, signed in with the session's admin key, showing the keys list."""
    sign_in(page, gateway.admin_key)
    return page


def sign_in(page: Any, key: str) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    page.get_by_label("Admin API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
