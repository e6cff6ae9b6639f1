"""The OpenAPI 3.1 document of the admin API (placeholder, completed below)."""

from __future__ import annotations

from typing import Any

from gateway.settings import Settings


def openapi_document(settings: Settings) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "Gateway admin API", "version": "1"}, "paths": {}}
