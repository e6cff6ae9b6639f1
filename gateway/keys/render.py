"""The one JSON form of every admin response body: the admin API, `gateway keys --json`
and the dashboard all show exactly these dicts (camelCase, RFC 3339 UTC times).

Each body is a model of `gateway.keys.shapes` (the same models the OpenAPI document is
made from) built with `model_construct` — the values are our own records, so there is
nothing to validate — and dumped in JSON mode, in the models' field order.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway.keys import shapes
from gateway.keys.model import ApiKey
from gateway.keys.shapes import moment
from gateway.store.base import AuditEvent, Page, UsageRecord, UsageSummary


def _key_fields(key: ApiKey, rotation_days: int) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scope": key.scope.value,
        "sites": list(key.sites),
        "status": key.status.value,
        "rateLimit": key.rate_limit,
        "hint": key.hint,
        "createdAt": moment(key.created_at),
        "updatedAt": moment(key.updated_at),
        "lastUsedAt": moment(key.last_used_at),
        "expiresAt": moment(key.expires_at),
        "revokedAt": moment(key.revoked_at),
        "rotatedAt": moment(key.rotated_at),
        "rotationDue": key.rotation_due(rotation_days),
        "expired": key.expired(),
    }


def key_record(key: ApiKey, rotation_days: int = 90) -> shapes.ApiKeyRecord:
    return shapes.ApiKeyRecord.model_construct(**_key_fields(key, rotation_days))


def usage_record(record: UsageRecord) -> shapes.UsageRecord:
    return shapes.UsageRecord.model_construct(
        at=moment(record.at),
        method=record.method,
        path=record.path,
        status=record.status,
        latencyMs=round(record.latency_ms, 3),
        site=record.site,
    )


def usage(summary: UsageSummary) -> shapes.Usage:
    return shapes.Usage.model_construct(
        totalRequests=summary.total_requests,
        daily=[
            shapes.DailyUsage.model_construct(date=d.date, requests=d.requests, errors=d.errors)
            for d in summary.daily
        ],
        recent=[usage_record(record) for record in summary.recent],
    )


def audit_event(event: AuditEvent) -> shapes.AuditEvent:
    return shapes.AuditEvent.model_construct(
        id=str(event.seq) if event.seq is not None else None,
        at=moment(event.at),
        action=event.action,
        keyId=event.key_id,
        actor=event.actor,
        requestId=event.request_id,
        changes=event.changes,
    )


def _json(model: BaseModel) -> dict[str, Any]:
    body: dict[str, Any] = model.model_dump(mode="json")
    return body


# --- the parts, as dicts (the dashboard's and tests' building blocks) ---------------------


def render_key(key: ApiKey, rotation_days: int = 90) -> dict[str, Any]:
    return _json(key_record(key, rotation_days))


def render_usage_record(record: UsageRecord) -> dict[str, Any]:
    return _json(usage_record(record))


def render_usage(summary: UsageSummary) -> dict[str, Any]:
    return _json(usage(summary))


def render_audit(event: AuditEvent) -> dict[str, Any]:
    return _json(audit_event(event))


# --- response bodies ---------------------------------------------------------------------


def key_body(key: ApiKey, rotation_days: int = 90) -> dict[str, Any]:
    return _json(shapes.KeyResponse.model_construct(apiKey=key_record(key, rotation_days)))


def key_value_body(key: ApiKey, key_value: str, rotation_days: int = 90) -> dict[str, Any]:
    """After create and rotate: the record and the key's value, shown this once (the JSON
    field is `secret`, SPEC §9; in the code "secret" is only the server secret)."""
    return _json(
        shapes.KeySecretResponse.model_construct(
            apiKey=key_record(key, rotation_days), secret=key_value
        )
    )


def details_body(key: ApiKey, summary: UsageSummary, rotation_days: int = 90) -> dict[str, Any]:
    record = shapes.ApiKeyWithUsage.model_construct(
        **_key_fields(key, rotation_days), usage=usage(summary)
    )
    return _json(shapes.KeyDetailsResponse.model_construct(apiKey=record))


def key_list_body(page: Page[ApiKey], rotation_days: int = 90) -> dict[str, Any]:
    return _json(
        shapes.KeyListResponse.model_construct(
            data=[key_record(key, rotation_days) for key in page.data],
            nextCursor=page.next_cursor,
        )
    )


def usage_list_body(page: Page[UsageRecord]) -> dict[str, Any]:
    return _json(
        shapes.UsageListResponse.model_construct(
            data=[usage_record(r) for r in page.data], nextCursor=page.next_cursor
        )
    )


def audit_list_body(page: Page[AuditEvent]) -> dict[str, Any]:
    return _json(
        shapes.AuditListResponse.model_construct(
            data=[audit_event(e) for e in page.data], nextCursor=page.next_cursor
        )
    )
