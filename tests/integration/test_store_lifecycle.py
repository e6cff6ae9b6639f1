"""The key lifecycle (SPEC §1) against both stores: a real SQLite file and a real Redis.

Every test runs twice through the `service` / `store_url` fixtures, so the two backends
are held to exactly the same behaviour.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.keys import format as key_format
from gateway.keys.model import KeyCreate, KeyEdit, KeyRotate, Status, utcnow
from gateway.keys.render import audit_list_body, details_body, key_body, key_list_body
from gateway.keys.service import KeyService
from gateway.store.base import ALL_KEYS, StoreError, StoreOptions, UsageRecord, open_store
from tests.conftest import need

VALUE = re.compile(r"^gw_[0-9A-Za-z]{38}$")


def gateway_error(code: str, status: int) -> Any:
    """pytest.raises for a GatewayError, checking code and status afterwards."""

    class _Check:
        def __enter__(self) -> None:
            self._raises = pytest.raises(GatewayError)
            self.info = self._raises.__enter__()

        def __exit__(self, *exc: Any) -> bool:
            handled = self._raises.__exit__(*exc)
            assert self.info.value.code == code, self.info.value
            assert self.info.value.status == status
            return handled

    return _Check()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll `condition` until it holds; the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def make(service: KeyService, name: str = "key", **fields: Any) -> tuple[Any, str]:
    return await service.create(KeyCreate(name=name, scope=fields.pop("scope", "read"), **fields))


def usage(key_id: str, at: datetime, status: int = 200, path: str = "/x") -> UsageRecord:
    return UsageRecord(key_id, at, "GET", path, status, 1.25, "site-1")


# --- create / get -------------------------------------------------------------------------


async def test_create_returns_value_once_with_hint(service: KeyService) -> None:
    key, value = await make(service, "billing", scope="write", sites=["a", "b"])
    assert VALUE.match(value)
    assert key_format.is_well_formed(value)
    assert key.hint == f"gw_{value[3:7]}…{value[-4:]}"
    assert key.status is Status.ACTIVE and key.sites == ("a", "b")
    stored = await service.get(key.id)
    assert stored == key
    # The value is in no later view of the key.
    for body in (key_body(stored), key_list_body(await service.list())):
        assert value not in json.dumps(body)
    match = await service.store.lookup_digest(service.digest(value))
    assert match is not None and match.key.id == key.id and match.expires_at is None


async def test_get_unknown_and_malformed_ids_are_404(service: KeyService) -> None:
    with gateway_error("KEY_NOT_FOUND", 404):
        await service.get("key_" + "A" * 16)
    for bad in ("", "key_", "nope", "key_" + "A" * 17, "key_../../etc", "key_" + "é" * 16):
        for call in (
            service.get(bad),
            service.details(bad),
            service.usage(bad),
            service.edit(bad, KeyEdit(name="x")),
            service.rotate(bad),
            service.revoke(bad),
            service.delete(bad),
        ):
            with gateway_error("KEY_NOT_FOUND", 404):
                await call


# --- list -------------------------------------------------------------------------------


async def test_list_newest_first_with_status_filter_and_paging(service: KeyService) -> None:
    keys = [(await make(service, f"k{i}"))[0] for i in range(7)]
    for key in keys[1::2]:
        await service.revoke(key.id)
    newest_first = [k.id for k in reversed(keys)]

    page = await service.list()
    assert [k.id for k in page.data] == newest_first and page.next_cursor is None

    seen, cursor = [], None
    while True:
        page = await service.list(limit=3, cursor=cursor)
        assert len(page.data) <= 3
        seen += [k.id for k in page.data]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == newest_first

    active = await service.list(Status.ACTIVE)
    assert [k.id for k in active.data] == [k.id for k in reversed(keys[0::2])]
    revoked = await service.list(Status.REVOKED, limit=2)
    assert [k.id for k in revoked.data] == [keys[5].id, keys[3].id]
    rest = await service.list(Status.REVOKED, limit=2, cursor=revoked.next_cursor)
    assert [k.id for k in rest.data] == [keys[1].id] and rest.next_cursor is None
    assert all(k.status is Status.REVOKED for k in revoked.data + rest.data)


async def test_list_limit_bounds(service: KeyService) -> None:
    await make(service)
    assert len((await service.list(limit=1)).data) == 1
    assert len((await service.list(limit=200)).data) == 1
    for bad in (0, -1, 201):
        with gateway_error("INVALID_REQUEST", 400):
            await service.list(limit=bad)


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", " 1", "9" * 19, "", "1e3"])
async def test_bad_cursors_are_400(service: KeyService, cursor: str) -> None:
    key, _ = await make(service)
    with gateway_error("INVALID_REQUEST", 400):
        await service.list(cursor=cursor)
    with gateway_error("INVALID_REQUEST", 400):
        await service.audit(cursor=cursor)
    with gateway_error("INVALID_REQUEST", 400):
        await service.usage(key.id, before=cursor)


# --- edit -------------------------------------------------------------------------------


async def test_edit_keeps_value_and_records_changes(service: KeyService) -> None:
    key, value = await make(service, "old", rateLimit="5/second")
    edited = await service.edit(
        key.id,
        KeyEdit.model_validate({"name": "new", "scope": "admin", "sites": ["s1"]}),
        actor="key_admin0000000000",
        request_id="req-1",
    )
    assert (edited.name, edited.scope.value, edited.sites) == ("new", "admin", ("s1",))
    assert edited.rate_limit == "5/second" and edited.hint == key.hint
    assert edited.updated_at >= key.updated_at
    match = await service.store.lookup_digest(service.digest(value))
    assert match is not None and match.key.name == "new"  # same value, new rules

    event = (await service.audit(key.id)).data[0]
    assert event.action == "edit" and event.actor == "key_admin0000000000"
    assert event.request_id == "req-1"
    assert event.changes == {
        "name": {"from": "old", "to": "new"},
        "scope": {"from": "read", "to": "admin"},
        "sites": {"from": ["*"], "to": ["s1"]},
    }


async def test_edit_null_rules(service: KeyService) -> None:
    future = utcnow() + timedelta(days=3)
    key, _ = await make(service, rateLimit="5/second", expiresAt=future)
    for field in ("name", "scope", "sites"):
        with gateway_error("INVALID_REQUEST", 400):
            await service.edit(key.id, KeyEdit.model_validate({field: None}))
    cleared = await service.edit(
        key.id, KeyEdit.model_validate({"rateLimit": None, "expiresAt": None})
    )
    assert cleared.rate_limit is None and cleared.expires_at is None
    assert (await service.audit(key.id)).data[0].changes["rateLimit"] == {
        "from": "5/second",
        "to": None,
    }


async def test_edit_without_change_writes_nothing(service: KeyService) -> None:
    key, _ = await make(service, "same")
    again = await service.edit(key.id, KeyEdit(name="same"))
    assert again == key
    assert [e.action for e in (await service.audit(key.id)).data] == ["create"]


# --- rotate -----------------------------------------------------------------------------


async def test_rotate_swaps_value_at_once(service: KeyService) -> None:
    key, old = await make(service, "r", scope="write", sites=["s"], rateLimit="9/minute")
    rotated, new = await service.rotate(key.id)
    assert VALUE.match(new) and new != old
    assert (rotated.id, rotated.name, rotated.scope, rotated.sites, rotated.rate_limit) == (
        key.id,
        key.name,
        key.scope,
        key.sites,
        key.rate_limit,
    )
    assert rotated.hint == key_format.hint(new) and rotated.rotated_at is not None
    assert await service.store.lookup_digest(service.digest(old)) is None
    match = await service.store.lookup_digest(service.digest(new))
    assert match is not None and match.key.id == key.id and match.expires_at is None
    event = (await service.audit(key.id)).data[0]
    assert event.action == "rotate"
    assert event.changes == {"hint": {"from": key.hint, "to": rotated.hint}}


async def test_rotate_with_grace_keeps_old_value_until_grace_end(service: KeyService) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    clocked = KeyService(service.store, service.secret, clock=lambda: now)
    key, first = await make(clocked)
    _, second = await clocked.rotate(key.id, KeyRotate(gracePeriodSeconds=60))

    old = await service.store.lookup_digest(service.digest(first))
    assert old is not None and old.key.id == key.id
    assert old.expires_at == now + timedelta(seconds=60)
    assert old.valid_at(now + timedelta(seconds=59)) and not old.valid_at(
        now + timedelta(seconds=60)
    )
    new = await service.store.lookup_digest(service.digest(second))
    assert new is not None and new.expires_at is None

    # A second rotation with a longer grace never extends the first value's life; the
    # second value gets its own grace; without grace every old value stops at once.
    _, third = await clocked.rotate(key.id, KeyRotate(gracePeriodSeconds=600))
    old = await service.store.lookup_digest(service.digest(first))
    assert old is not None and old.expires_at == now + timedelta(seconds=60)
    mid = await service.store.lookup_digest(service.digest(second))
    assert mid is not None and mid.expires_at == now + timedelta(seconds=600)
    _, fourth = await clocked.rotate(key.id)
    for value in (first, second, third):
        assert await service.store.lookup_digest(service.digest(value)) is None
    assert (await service.store.lookup_digest(service.digest(fourth))) is not None
    assert (await service.audit(key.id)).data[2].changes["gracePeriodSeconds"] == 60


async def test_rotating_a_revoked_key_is_409(service: KeyService) -> None:
    key, value = await make(service)
    revoked = await service.revoke(key.id)
    with gateway_error("KEY_REVOKED", 409):
        await service.rotate(key.id)
    assert await service.get(key.id) == revoked
    match = await service.store.lookup_digest(service.digest(value))
    assert match is not None and match.key.status is Status.REVOKED


# --- revoke / delete --------------------------------------------------------------------


async def test_revoke_is_idempotent(service: KeyService) -> None:
    key, value = await make(service)
    revoked = await service.revoke(key.id, actor="key_admin0000000000")
    assert revoked.status is Status.REVOKED and revoked.revoked_at is not None
    again = await service.revoke(key.id)
    assert again == revoked
    assert [e.action for e in (await service.audit(key.id)).data] == ["revoke", "create"]
    match = await service.store.lookup_digest(service.digest(value))
    assert match is not None and match.key.status is Status.REVOKED


async def test_delete_active_key_is_409_and_changes_nothing(service: KeyService) -> None:
    key, value = await make(service)
    await service.store.record_usage([usage(key.id, utcnow())])
    before = await service.get(key.id)
    with gateway_error("KEY_NOT_REVOKED", 409):
        await service.delete(key.id)
    assert await service.get(key.id) == before
    assert await service.store.lookup_digest(service.digest(value)) is not None
    assert (await service.details(key.id))[1].total_requests == 1
    assert [e.action for e in (await service.audit(key.id)).data] == ["create"]


async def test_delete_revoked_key_removes_it_but_keeps_audit(service: KeyService) -> None:
    key, value = await make(service)
    other, _ = await make(service, "other")
    await service.store.record_usage([usage(key.id, utcnow()), usage(other.id, utcnow())])
    await service.revoke(key.id)
    await service.delete(key.id, actor="key_admin0000000000", request_id="r-del")

    with gateway_error("KEY_NOT_FOUND", 404):
        await service.get(key.id)
    for call in (service.delete(key.id), service.revoke(key.id), service.usage(key.id)):
        with gateway_error("KEY_NOT_FOUND", 404):
            await call
    assert await service.store.lookup_digest(service.digest(value)) is None
    summary = await service.store.usage_summary(key.id, 30, 20)
    assert (summary.total_requests, summary.daily, summary.recent) == (0, [], [])
    assert (await service.store.list_usage(key.id, 10, None)).data == []
    assert [k.id for k in (await service.list()).data] == [other.id]
    events = (await service.audit(key.id)).data
    assert [e.action for e in events] == ["delete", "revoke", "create"]
    assert events[0].request_id == "r-del" and events[0].changes == {"name": "key"}
    # Usage recorded for a deleted key (a flush racing the delete) is dropped.
    await service.store.record_usage([usage(key.id, utcnow())])
    assert (await service.store.usage_summary(key.id, 30, 20)).total_requests == 0
    assert (await service.details(other.id))[1].total_requests == 1


# --- usage ------------------------------------------------------------------------------


async def test_usage_summary_and_last_used(service: KeyService) -> None:
    key, _ = await make(service)
    now = utcnow().replace(microsecond=0)
    yesterday = now - timedelta(days=1)
    records = [
        usage(key.id, now - timedelta(seconds=5), 200, "/a"),
        usage(key.id, now, 404, "/b"),  # the latest, though not last in the batch
        usage(key.id, now - timedelta(seconds=9), 500, "/c"),
        usage(key.id, yesterday, 200, "/d"),
    ]
    await service.store.record_usage(records)
    key_after, summary = await service.details(key.id, days=30)
    assert key_after.last_used_at == now
    assert summary.total_requests == 4
    assert len(summary.daily) == 30
    by_date = {d.date: (d.requests, d.errors) for d in summary.daily}
    assert by_date[now.date().isoformat()] == (3, 2)
    assert by_date[yesterday.date().isoformat()] == (1, 0)
    # Recent: newest recorded first, with every field.
    assert [r.path for r in summary.recent] == ["/d", "/c", "/b", "/a"]
    first = summary.recent[-1]
    assert (first.method, first.status, first.latency_ms, first.site) == (
        "GET",
        200,
        1.25,
        "site-1",
    )
    # An older batch never moves lastUsedAt back.
    await service.store.record_usage([usage(key.id, now - timedelta(hours=1))])
    assert (await service.get(key.id)).last_used_at == now
    body = json.dumps(details_body(*(await service.details(key.id))))
    assert '"totalRequests": 5' in body


async def test_usage_paging_and_trim(store_url: str) -> None:
    store = open_store(store_url, StoreOptions(recent_per_key=25, daily_retention_days=2))
    await store.open()
    try:
        service = KeyService(store, b"s" * 40)
        key, _ = await make(service)
        start = utcnow()
        for batch in range(3):  # 30 records in 3 flushes, recent keeps 25
            await store.record_usage(
                [usage(key.id, start, path=f"/{batch * 10 + i}") for i in range(10)]
            )
        # An old day beyond the retention is dropped.
        await store.record_usage([usage(key.id, start - timedelta(days=5), path="/old")])
        paths, before = [], None
        while True:
            page = await service.usage(key.id, limit=7, before=before)
            paths += [r.path for r in page.data]
            before = page.next_cursor
            if before is None:
                break
        assert paths == ["/old"] + [f"/{i}" for i in range(29, 5, -1)]
        summary = await store.usage_summary(key.id, 30, 20)
        assert summary.total_requests == 31
        assert [d.date for d in summary.daily] == [start.date().isoformat()]
        assert len(summary.recent) == 20
        with gateway_error("INVALID_REQUEST", 400):
            await service.usage(key.id, limit=201)
    finally:
        await store.close()


# --- audit ------------------------------------------------------------------------------


async def test_audit_paging_and_filter(service: KeyService) -> None:
    a, _ = await make(service, "a")
    b, _ = await make(service, "b")
    await service.edit(a.id, KeyEdit(name="a2"))
    await service.rotate(b.id)
    await service.revoke(a.id)
    expected = [("revoke", a.id), ("rotate", b.id), ("edit", a.id), ("create", b.id)]
    expected.append(("create", a.id))

    seen, cursor = [], None
    while True:
        page = await service.audit(limit=2, cursor=cursor)
        seen += [(e.action, e.key_id) for e in page.data]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected
    only_a = await service.audit(a.id)
    assert [e.action for e in only_a.data] == ["revoke", "edit", "create"]
    first = await service.audit(a.id, limit=1)
    rest = await service.audit(a.id, limit=5, cursor=first.next_cursor)
    assert [e.action for e in rest.data] == ["edit", "create"] and rest.next_cursor is None
    body = audit_list_body(only_a)
    assert body["data"][0]["keyId"] == a.id and body["data"][0]["actor"] == "cli"
    with gateway_error("INVALID_REQUEST", 400):
        await service.audit("not-a-key-id")
    assert (await service.audit("key_" + "Z" * 16)).data == []


# --- change events ----------------------------------------------------------------------


async def test_change_events_local_and_remote(service: KeyService, store_url: str) -> None:
    local: list[str] = []
    service.store.add_listener(local.append)
    remote_store = open_store(store_url)
    await remote_store.open()
    remote: list[str] = []
    try:
        remote_store.add_listener(remote.append)
        if store_url.startswith("redis"):
            # The remote feed reports ALL_KEYS once it is subscribed.
            await eventually(lambda: ALL_KEYS in remote)
        key, _ = await make(service)
        assert local[-1] == key.id  # synchronous: before create returned
        await eventually(lambda: key.id in remote, timeout=2.0)
        local.clear()
        remote.clear()
        await service.revoke(key.id)
        assert local and set(local) == {key.id}
        took = await eventually(lambda: key.id in remote, timeout=2.0)
        assert took < 1.0

        # And the other way round: a change through the second store object.
        local.clear()
        remote_service = KeyService(remote_store, service.secret)
        await remote_service.delete(key.id)
        assert remote[-1] == key.id
        await eventually(lambda: key.id in local, timeout=2.0)
    finally:
        await remote_store.close()


async def test_secret_fingerprint_is_checked(service: KeyService) -> None:
    from gateway.settings import ConfigError

    await service.check_secret()  # the same secret: fine, again
    other = KeyService(service.store, b"another-secret-" + b"y" * 40)
    with pytest.raises(ConfigError, match="different server secret"):
        await other.check_secret()


# --- Redis down ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_redis_down_fails_fast_and_recovers(tmp_path: Any) -> None:
    """A frozen Redis (SIGSTOP: connections accepted, nothing answered) and a dead one
    give StoreError within the timeout; the change feed comes back by itself."""
    server = need("redis-server", shutil.which("redis-server"))
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    store = open_store(f"redis://127.0.0.1:{port}/0", StoreOptions(timeout=0.3))
    try:
        await store.open()
        deadline = time.monotonic() + 10
        while True:
            try:
                await store.ping()
                break
            except StoreError:
                assert time.monotonic() < deadline, "redis-server did not start"
                await asyncio.sleep(0.05)
        events: list[str] = []
        store.add_listener(events.append)
        await eventually(lambda: ALL_KEYS in events)
        service = KeyService(store, b"s" * 40)
        key, _ = await make(service)

        os.kill(proc.pid, signal.SIGSTOP)
        try:
            calls = [
                store.ping(),
                store.get_key(key.id),
                store.lookup_digest("0" * 64),
                store.list_keys(None, 10, None),
                store.record_usage([usage(key.id, utcnow())]),
                service.revoke(key.id),
                service.create(KeyCreate(name="x", scope="read")),
            ]
            for call in calls:
                started = time.monotonic()
                with pytest.raises(StoreError):
                    await call
                assert time.monotonic() - started < 1.0
        finally:
            os.kill(proc.pid, signal.SIGCONT)

        events.clear()
        proc.terminate()
        proc.wait(10)
        started = time.monotonic()
        with pytest.raises(StoreError):
            await store.get_key(key.id)
        assert time.monotonic() - started < 1.0

        # Back on the same port: the feed re-subscribes and says "forget everything".
        proc = subprocess.Popen(
            [server, "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        await eventually(lambda: ALL_KEYS in events, timeout=10)
        await store.ping()
    finally:
        await store.close()
        proc.kill()
        proc.wait(10)


async def test_a_broken_listener_fails_nothing(service: KeyService, store_url: str) -> None:
    def broken(key_id: str) -> None:
        raise RuntimeError("listener bug")

    seen: list[str] = []
    service.store.add_listener(broken)
    service.store.add_listener(seen.append)
    key, _ = await make(service)  # the write stands, and the next listener still hears it
    assert seen[-1] == key.id
    assert (await service.get(key.id)).id == key.id
    other = open_store(store_url)
    await other.open()
    try:
        await KeyService(other, service.secret).revoke(key.id)
    finally:
        await other.close()
    await eventually(lambda: seen.count(key.id) >= 2)  # the feed survived the bug
