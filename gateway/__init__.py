"""Gateway: an API-key gateway for HTTP APIs — as a proxy (`gateway serve`) or mounted
in any ASGI app (`GatewayMiddleware`).

    from gateway import GatewayMiddleware, load_settings
    app.add_middleware(GatewayMiddleware, settings=load_settings("gateway.toml"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GatewayMiddleware", "Runtime", "__version__", "load_settings"]

if TYPE_CHECKING:
    from gateway.middleware import GatewayMiddleware
    from gateway.runtime import Runtime
    from gateway.settings import load_settings


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import gateway.keys…` (the CLI) stays light.
    if name == "GatewayMiddleware":
        from gateway.middleware import GatewayMiddleware

        return GatewayMiddleware
    if name == "Runtime":
        from gateway.runtime import Runtime

        return Runtime
    if name == "load_settings":
        from gateway.settings import load_settings

        return load_settings
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
