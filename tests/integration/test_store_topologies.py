"""The whole key lifecycle suite (test_store_lifecycle.py) on `redis+cluster://` (a real
3-master Cluster) and `redis+sentinel://` (a real master, replica and sentinel), SPEC §13:
the same behaviour as on a single Redis.
"""

from __future__ import annotations

import pytest

from tests.integration import test_store_lifecycle as lifecycle
from tests.integration.test_store_lifecycle import *  # noqa: F403 - the same tests, collected here

# Not about the store URL: it starts its own single redis-server.
del test_redis_down_fails_fast_and_recovers  # noqa: F821
assert lifecycle  # imported for the line above to be meaningful to readers


@pytest.fixture
def store_url(topology_url: str) -> str:
    return topology_url
