"""`python -m gateway.healthcheck`: exit 0 when the admin listener's /healthz answers 200.

The Docker image's HEALTHCHECK runs it. The admin address is the one the gateway uses:
`server.admin_listen` from GATEWAY_CONFIG and the environment, and — in a container, where
the gateway is process 1 — its own `--config` / `--admin-listen` flags, read from
/proc/1/cmdline. A wildcard address (0.0.0.0, ::) is asked on loopback.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from gateway.settings import ConfigError, load_settings, parse_host_port

_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _flags(argv: list[str]) -> dict[str, str]:
    """The values of --config and --admin-listen in a command line."""
    found: dict[str, str] = {}
    for i, arg in enumerate(argv):
        for flag in ("--config", "--admin-listen"):
            if arg == flag and i + 1 < len(argv):
                found[flag] = argv[i + 1]
            elif arg.startswith(flag + "="):
                found[flag] = arg.split("=", 1)[1]
    return found


def _pid1_flags() -> dict[str, str]:
    try:
        argv = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return {}
    return _flags(argv) if "serve" in argv else {}


def health_url(flags: dict[str, str]) -> str:
    overrides = {}
    if "--admin-listen" in flags:
        overrides["server"] = {"admin_listen": flags["--admin-listen"]}
    settings = load_settings(flags.get("--config"), **overrides)
    host, port = parse_host_port(settings.server.admin_listen)
    host = _LOOPBACK.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"


def main(argv: list[str] | None = None) -> int:
    flags = _pid1_flags()
    flags.update(_flags(sys.argv[1:] if argv is None else argv))
    try:
        url = health_url(flags)
        with urllib.request.urlopen(url, timeout=2) as response:
            healthy = response.status == 200
    except (OSError, ConfigError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
