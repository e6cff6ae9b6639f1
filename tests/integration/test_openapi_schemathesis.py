"""The admin API against its own OpenAPI document, in-process (SPEC §9).

schemathesis generates requests from `/openapi.json` (valid and invalid ones) and checks
that no response is a 5xx and that every response — status, headers, content type and
body — is the one the document describes. A second test checks that every body the
renderers produce validates against the document's response models, so the document
cannot drift from `gateway.keys.render`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import openapi_spec_validator
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.routing import Route

from gateway.admin.api import api_routes
from gateway.admin.app import create_admin_app
from gateway.admin.openapi import (
    AuditListResponse,
    ErrorResponse,
    KeyDetailsResponse,
    KeyListResponse,
    KeyResponse,
    KeySecretResponse,
    UsageListResponse,
    openapi_document,
)
from gateway.errors import GatewayError
from gateway.keys import render
from gateway.keys.model import KeyCreate, KeyEdit, utcnow
from gateway.keys.service import KeyService
from gateway.runtime import Runtime, open_key_service
from gateway.settings import Settings, load_settings
from gateway.store.base import Page, UsageRecord
from tests.conftest import TEST_SECRET

T = TypeVar("T")
ADMIN: dict[str, str] = {}


class Seeder:
    """A KeyService on the app's SQLite file, on its own loop thread, for making keys
    from the (synchronous) schemathesis tests while the app runs on schemathesis's loop."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service: KeyService = self.run(open_key_service(settings))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def fresh_admin(self) -> None:
        """A new admin key for the next requests: the generated calls may edit, rotate or
        revoke any key they learn about, the previous admin key included."""
        _, secret = self.run(self.service.create(KeyCreate(name="schemathesis", scope="admin")))
        # Both documented schemes carry it, so no generated credential is sent instead.
        ADMIN.update({"X-API-Key": secret, "Authorization": f"Bearer {secret}"})

    def seed(self) -> None:
        """A key with history (edited, used, revoked) for the list and audit views."""

        async def seed() -> None:
            other, _ = await self.service.create(KeyCreate(name="other", scope="read"))
            await self.service.edit(other.id, KeyEdit(name="renamed"))
            record = UsageRecord(other.id, utcnow(), "GET", "/x", 200, 1.0, None)
            await self.service.store.record_usage([record])
            await self.service.revoke(other.id)

        self.run(seed())

    def close(self) -> None:
        self.run(self.service.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


SEEDER: list[Seeder] = []


@pytest.fixture(scope="module")
def admin_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GATEWAY_SECRET", TEST_SECRET)
        path: Path = tmp_path_factory.mktemp("schemathesis") / "gateway.db"
        # schemathesis sends bad keys on purpose (ignored-auth checks): keep the
        # failed-attempt throttle from answering 429 to the admin key's requests.
        settings = load_settings(
            storage={"url": f"sqlite:///{path}"}, auth={"failed_attempts_limit": "100000/minute"}
        )
        seeder = Seeder(settings)
        seeder.seed()
        seeder.fresh_admin()
        SEEDER.append(seeder)
        app = create_admin_app(Runtime(settings), manage_runtime=True)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        # Stateful sequences follow the document's own links only: ids that the sequence's
        # own create/rotate/revoke answered. schemathesis would otherwise also infer links
        # (e.g. GET /v1/keys -> any data[*].id) and pick one of the listed keys with an
        # untracked random choice; the list holds every key of every earlier scenario in
        # this module's store, some revoked, so the same choices met a different key, a
        # different status (200 vs 409) and a different next step, and Hypothesis stopped
        # with FlakyStrategyDefinition (about 1 run in 15; reproducible with seeds 21, 23).
        schema.config.phases.stateful.inference.algorithms = []
        try:
            yield schema
        finally:
            SEEDER.remove(seeder)
            seeder.close()


schema = schemathesis.pytest.from_fixture("admin_schema")


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_response_matches_the_document(case: Any) -> None:
    # Excluded: "schema-valid data is accepted". Some rules cannot be said in JSON Schema
    # (expiresAt must be in the future, a rate limit must parse): those get a documented
    # 400 INVALID_REQUEST, which every other check still verifies.
    SEEDER[0].fresh_admin()
    case.call_and_validate(
        headers=ADMIN, excluded_checks=[schemathesis.checks.positive_data_acceptance]
    )


# --- the document's response models describe what the renderers produce ------------------


async def test_rendered_bodies_validate_against_the_response_models(service: Any) -> None:
    key, secret = await service.create(
        KeyCreate(
            name="drift",
            scope="write",
            sites=["a"],
            rate_limit="5/second",
            expires_at=utcnow() + timedelta(days=1),
        )
    )
    await service.store.record_usage(
        [UsageRecord(key.id, utcnow(), "POST", "/y", 503, 2.5, "a") for _ in range(3)]
    )
    days = service.rotation_days
    KeySecretResponse.model_validate(render.key_value_body(key, secret, days), strict=False)
    KeyResponse.model_validate(render.key_body(key, days))
    details_key, summary = await service.details(key.id)
    KeyDetailsResponse.model_validate(render.details_body(details_key, summary, days))
    KeyListResponse.model_validate(render.key_list_body(await service.list(None, 10), days))
    KeyListResponse.model_validate(render.key_list_body(Page([], None), days))
    UsageListResponse.model_validate(render.usage_list_body(await service.usage(key.id, 2)))
    rotated, _ = await service.rotate(key.id)
    await service.edit(key.id, KeyEdit(name="other", rate_limit=None))
    await service.revoke(key.id)
    await service.delete(key.id)
    audit = render.audit_list_body(await service.audit(None, 200))
    assert {e["action"] for e in audit["data"]} == {"create", "edit", "rotate", "revoke", "delete"}
    AuditListResponse.model_validate(audit)
    ErrorResponse.model_validate(GatewayError("KEY_NOT_FOUND", details={"id": "x"}).envelope("r"))
    assert rotated.id == key.id


# --- stateful: follow the document's links from create to every other operation ------------


def test_stateful_sequences_through_the_links(admin_schema: Any) -> None:
    class AdminAPI(admin_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            SEEDER[0].fresh_admin()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": ADMIN}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response,
                headers=ADMIN,
                excluded_checks=[schemathesis.checks.positive_data_acceptance],
            )

    AdminAPI.run(
        settings=settings(
            max_examples=25,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )


# --- the document is valid OpenAPI 3.1 and names every route and method ---------------------


def _document() -> dict[str, Any]:
    return openapi_document(load_settings())


def test_the_document_is_valid_openapi_3_1() -> None:
    document = _document()
    assert document["openapi"] == "3.1.0"
    openapi_spec_validator.validate(document)


def test_every_route_and_method_is_documented() -> None:
    runtime = Runtime(load_settings())
    served: dict[str, set[str]] = {}
    for route in api_routes(runtime):
        assert isinstance(route, Route) and route.methods is not None
        served["/v1" + route.path] = {m.lower() for m in route.methods} - {"head"}
    documented = {
        path: {m for m in item if m != "parameters"}
        for path, item in _document()["paths"].items()
        if path.startswith("/v1")
    }
    assert documented == served
    for path in ("/healthz", "/readyz", "/metrics"):
        assert _document()["paths"][path]["get"]["security"] == []


def test_security_schemes_follow_the_configured_key_headers() -> None:
    document = openapi_document(load_settings(auth={"headers": ["Authorization", "X-Gw-Key"]}))
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <admin key>`",
    }
    assert schemes["X-Gw-Key"] == {"type": "apiKey", "in": "header", "name": "X-Gw-Key"}
    assert document["security"] == [{"bearerAuth": []}, {"X-Gw-Key": []}]
