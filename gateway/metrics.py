"""The Prometheus metrics, defined once (SPEC §14). No key value and no per-key label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests handled, by outcome ('allowed' or the error code in lower case) and status.",
    ["outcome", "status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from receiving a request to the end of its response.",
    registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "gateway_upstream_duration_seconds",
    "Time from sending a request upstream to receiving its response headers.",
    registry=REGISTRY,
)
KEY_CACHE = Counter(
    "gateway_key_cache_total",
    "Key verifications answered from the in-process cache (hit) or the store (miss).",
    ["result"],
    registry=REGISTRY,
)
BACKEND_ERRORS = Counter(
    "gateway_backend_errors_total",
    "Failed calls to a backend (store, rate_limit, upstream).",
    ["backend"],
    registry=REGISTRY,
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "gateway_rate_limit_backend_fail_open_total",
    "Requests admitted without a rate-limit check because its backend failed.",
    registry=REGISTRY,
)
USAGE_DROPPED = Counter(
    "gateway_usage_dropped_total",
    "Usage records dropped (buffer full or the store failed for good).",
    registry=REGISTRY,
)

# Children resolved once: labels() costs a dict lookup and a lock on every call.
KEY_CACHE_HIT = KEY_CACHE.labels("hit")
KEY_CACHE_MISS = KEY_CACHE.labels("miss")
