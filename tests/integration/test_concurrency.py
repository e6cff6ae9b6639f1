"""Races (SPEC §1 rotate/revoke): concurrent rotations leave exactly one valid value, and a
revoke racing a rotate never leaves a revoked key with a working value. On both stores:
one store object under asyncio.gather, two store objects, and two real processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.keys.model import ApiKey, KeyCreate, Status
from gateway.keys.service import KeyService
from gateway.runtime import key_service
from gateway.settings import load_settings

ITERATIONS = 25

# A worker process: waits for the go file, then rotates or revokes each key it is given.
WORKER = r"""
import asyncio, json, os, sys, time
from gateway.runtime import key_service
from gateway.settings import load_settings
from gateway.errors import GatewayError

url, action, go, ids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

async def main():
    out = {"values": [], "errors": []}
    async with key_service(load_settings(storage={"url": url})) as service:
        print("ready", flush=True)
        while not os.path.exists(go):
            await asyncio.sleep(0.001)
        for key_id in ids:
            try:
                if action == "rotate":
                    out["values"].append((await service.rotate(key_id))[1])
                else:
                    await service.revoke(key_id)
            except GatewayError as error:
                out["errors"].append(error.code)
    print(json.dumps(out), flush=True)

asyncio.run(main())
"""


@pytest.fixture
async def second(store_url: str) -> AsyncIterator[KeyService]:
    """Another KeyService on another store object (own connection) on the same backend."""
    async with key_service(load_settings(storage={"url": store_url})) as svc:
        yield svc


async def valid_values(service: KeyService, values: list[str]) -> list[tuple[str, ApiKey]]:
    found = []
    for value in values:
        match = await service.store.lookup_digest(service.digest(value))
        if match is not None and match.valid_at(service.clock()):
            found.append((value, match.key))
    return found


async def check_one_valid(service: KeyService, key_id: str, values: list[str]) -> None:
    valid = await valid_values(service, values)
    assert len(valid) == 1, f"{len(valid)} valid values after concurrent rotations"
    value, key = valid[0]
    assert key.hint == (await service.get(key_id)).hint == f"gw_{value[3:7]}…{value[-4:]}"


async def test_parallel_rotations_on_one_store(service: KeyService) -> None:
    for _ in range(ITERATIONS):
        key, original = await service.create(KeyCreate(name="r", scope="read"))
        results = await asyncio.gather(service.rotate(key.id), service.rotate(key.id))
        await check_one_valid(service, key.id, [original] + [value for _, value in results])


async def test_parallel_rotations_on_two_store_objects(
    service: KeyService, second: KeyService
) -> None:
    for _ in range(ITERATIONS):
        key, original = await service.create(KeyCreate(name="r", scope="read"))
        results = await asyncio.gather(
            service.rotate(key.id), second.rotate(key.id), service.rotate(key.id)
        )
        await check_one_valid(service, key.id, [original] + [value for _, value in results])
        rotations = [e for e in (await service.audit(key.id)).data if e.action == "rotate"]
        assert len(rotations) == 3
    if hasattr(service.store, "conflicts"):  # Redis: the race really happened
        assert service.store.conflicts + second.store.conflicts > 0


async def check_revoked_for_good(service: KeyService, key_id: str, values: list[str]) -> None:
    assert (await service.get(key_id)).status is Status.REVOKED
    for value in values:
        match = await service.store.lookup_digest(service.digest(value))
        assert match is None or match.key.status is Status.REVOKED


async def race_revoke_and_rotate(a: KeyService, b: KeyService) -> None:
    for i in range(ITERATIONS * 2):
        key, original = await a.create(KeyCreate(name="race", scope="read"))
        rotate, revoke = (a.rotate(key.id), b.revoke(key.id))
        pair = (rotate, revoke) if i % 2 else (revoke, rotate)
        results = await asyncio.gather(*pair, return_exceptions=True)
        values = [original]
        for result in results:
            if isinstance(result, tuple):
                values.append(result[1])
            elif isinstance(result, BaseException):
                assert isinstance(result, GatewayError) and result.code == "KEY_REVOKED"
        await check_revoked_for_good(a, key.id, values)


async def test_revoke_racing_rotate_on_one_store(service: KeyService) -> None:
    await race_revoke_and_rotate(service, service)


async def test_revoke_racing_rotate_on_two_store_objects(
    service: KeyService, second: KeyService
) -> None:
    await race_revoke_and_rotate(service, second)
    if hasattr(service.store, "conflicts"):  # Redis: the race really happened
        assert service.store.conflicts + second.store.conflicts > 0


def start_workers(store_url: str, tmp_path: Path, jobs: list[tuple[str, list[str]]]) -> list:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, store_url, action, str(go), *ids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for action, ids in jobs
    ]
    for proc in procs:  # each has opened the store before any starts writing
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


async def test_rotations_from_two_processes(
    service: KeyService, store_url: str, tmp_path: Path
) -> None:
    key, original = await service.create(KeyCreate(name="p", scope="read"))
    ids = [key.id] * 15
    outputs = start_workers(store_url, tmp_path, [("rotate", ids), ("rotate", ids)])
    values = [original] + [v for out in outputs for v in out["values"]]
    assert len(values) == 31 and not any(out["errors"] for out in outputs)
    await check_one_valid(service, key.id, values)
    rotations = [e for e in (await service.audit(key.id, limit=200)).data if e.action == "rotate"]
    assert len(rotations) == 30


async def test_revoke_racing_rotate_from_two_processes(
    service: KeyService, store_url: str, tmp_path: Path
) -> None:
    created = [await service.create(KeyCreate(name=f"k{i}", scope="read")) for i in range(30)]
    ids = [key.id for key, _ in created]
    rotator, revoker = start_workers(store_url, tmp_path, [("rotate", ids), ("revoke", ids[::-1])])
    assert set(rotator["errors"]) <= {"KEY_REVOKED"} and not revoker["errors"]
    assert len(rotator["values"]) + len(rotator["errors"]) == len(ids)
    values = [value for _, value in created] + rotator["values"]
    for key_id in ids:
        await check_revoked_for_good(service, key_id, values)
