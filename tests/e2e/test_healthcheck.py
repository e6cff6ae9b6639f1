"""The Docker HEALTHCHECK (`python -m gateway.healthcheck`) asks the admin listener the
gateway is configured with, not a hard-coded 127.0.0.1:8001."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.e2e.conftest import ROOT, Gateway, Upstream, clean_env, free_port

pytestmark = pytest.mark.e2e


def healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.healthcheck", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_healthcheck_finds_the_configured_admin_listener(
    upstream: Upstream, start_gateway: Callable[..., Gateway]
) -> None:
    gw = start_gateway(upstream.url)
    config = str(gw.proc.log_path.parent / "gateway.toml")
    assert healthcheck("--config", config).returncode == 0
    assert healthcheck(GATEWAY_CONFIG=config).returncode == 0
    wildcard = f"0.0.0.0:{gw.admin_port}"  # asked on loopback
    assert healthcheck(GATEWAY_SERVER__ADMIN_LISTEN=wildcard).returncode == 0
    assert healthcheck("--admin-listen", f"127.0.0.1:{gw.admin_port}").returncode == 0
    nobody = healthcheck("--admin-listen", f"127.0.0.1:{free_port()}")
    assert nobody.returncode == 1 and "unhealthy" in nobody.stderr


def test_the_dockerfile_uses_it() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "gateway.healthcheck"]' in text
    assert "8001/healthz" not in text
