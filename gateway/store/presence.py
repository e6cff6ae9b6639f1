"""Which running gateways have applied a key change (SPEC §10: "immediate" is exact).

Every store numbers its key changes. A gateway process that listens to a store's change
events (it has a key cache) records in that store, about once a second and right after
it applied new changes, the number of the last change it has applied — its cache no
longer holds anything older. A record not refreshed for `LIVE_SECONDS` belongs to a
gateway that stopped (or cannot reach the store) and is ignored.

`wait_applied` is what `gateway keys revoke|rotate|edit|delete` calls after its write:
it returns once every live gateway has applied that change, or after `timeout` with the
ones that have not.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from typing import Protocol

# How often a gateway refreshes its record when nothing changes, and how old a record may
# be before its gateway counts as stopped.
HEARTBEAT_SECONDS = 1.0
LIVE_SECONDS = 5.0
# The longest a key command waits for the gateways (SPEC §10).
WAIT_SECONDS = 1.0
_POLL_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class GatewayPresence:
    """One running gateway process, as recorded in the store."""

    id: str
    label: str  # "<host> pid <pid>", for the messages a user reads
    applied: int  # the number of the last change this gateway has applied


class PresenceStore(Protocol):
    """What `wait_applied` needs from a store."""

    last_write: int  # the number of the last change written through this store object

    # This store object's own record, when it is a running gateway's: its listeners heard
    # its own writes before they returned, so nobody waits for it.
    @property
    def presence_id(self) -> str | None: ...

    async def live_gateways(self) -> list[GatewayPresence]: ...


def process_label() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


async def wait_applied(
    store: PresenceStore, change: int | None = None, timeout: float = WAIT_SECONDS
) -> list[GatewayPresence]:
    """Wait until every live gateway has applied `change` (default: this store object's
    last write); return the gateways that still had not when `timeout` ran out."""
    change = store.last_write if change is None else change
    if change <= 0:
        return []
    deadline = time.monotonic() + timeout
    while True:
        own = store.presence_id
        behind = [g for g in await store.live_gateways() if g.applied < change and g.id != own]
        if not behind or time.monotonic() >= deadline:
            return behind
        await asyncio.sleep(_POLL_SECONDS)
