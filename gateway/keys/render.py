"""The one JSON form of every admin response body: the admin API, `gateway keys --json`
and the dashboard all show exactly these dicts (camelCase, RFC 3339 UTC times)."""

from __future__ import annotations

from typing import Any

from gateway.keys.model import ApiKey, rfc3339
from gateway.store.base import AuditEvent, Page, UsageRecord, UsageSummary


def render_key(key: ApiKey, rotation_days: int = 90) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scope": key.scope.value,
        "sites": list(key.sites),
        "status": key.status.value,
        "rateLimit": key.rate_limit,
        "hint": key.hint,
        "createdAt": rfc3339(key.created_at),
        "updatedAt": rfc3339(key.updated_at),
        "lastUsedAt": rfc3339(key.last_used_at),
        "expiresAt": rfc3339(key.expires_at),
        "revokedAt": rfc3339(key.revoked_at),
        "rotatedAt": rfc3339(key.rotated_at),
        "rotationDue": key.rotation_due(rotation_days),
        "expired": key.expired(),
    }


def render_usage_record(record: UsageRecord) -> dict[str, Any]:
    return {
        "at": rfc3339(record.at),
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "latencyMs": round(record.latency_ms, 3),
        "site": record.site,
    }


def render_usage(summary: UsageSummary) -> dict[str, Any]:
    return {
        "totalRequests": summary.total_requests,
        "daily": [
            {"date": day.date, "requests": day.requests, "errors": day.errors}
            for day in summary.daily
        ],
        "recent": [render_usage_record(record) for record in summary.recent],
    }


def render_audit(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": str(event.seq) if event.seq is not None else None,
        "at": rfc3339(event.at),
        "action": event.action,
        "keyId": event.key_id,
        "actor": event.actor,
        "requestId": event.request_id,
        "changes": event.changes,
    }


# --- response bodies ---------------------------------------------------------------------


def key_body(key: ApiKey, rotation_days: int = 90) -> dict[str, Any]:
    return {"apiKey": render_key(key, rotation_days)}


def key_value_body(key: ApiKey, key_value: str, rotation_days: int = 90) -> dict[str, Any]:
    """After create and rotate: the record and the key's value, shown this once (the JSON
    field is `secret`, SPEC §9; in the code "secret" is only the server secret)."""
    return {"apiKey": render_key(key, rotation_days), "secret": key_value}


def details_body(key: ApiKey, summary: UsageSummary, rotation_days: int = 90) -> dict[str, Any]:
    return {"apiKey": {**render_key(key, rotation_days), "usage": render_usage(summary)}}


def key_list_body(page: Page[ApiKey], rotation_days: int = 90) -> dict[str, Any]:
    return {
        "data": [render_key(key, rotation_days) for key in page.data],
        "nextCursor": page.next_cursor,
    }


def usage_list_body(page: Page[UsageRecord]) -> dict[str, Any]:
    return {"data": [render_usage_record(r) for r in page.data], "nextCursor": page.next_cursor}


def audit_list_body(page: Page[AuditEvent]) -> dict[str, Any]:
    return {"data": [render_audit(e) for e in page.data], "nextCursor": page.next_cursor}
