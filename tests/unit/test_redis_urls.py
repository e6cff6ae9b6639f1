"""The Redis URL forms of SPEC §13 (`limits`' own): parsed, accepted, refused clearly."""

from __future__ import annotations

import pytest

from gateway.settings import ConfigError, load_settings
from gateway.store.redis_topology import limits_uri, parse_redis_url


def test_sentinel_url_parts() -> None:
    target = parse_redis_url("redis+sentinel://u:p%40ss@10.0.0.1:26379,s2:26380/mymaster?db=3")
    assert target.kind == "sentinel"
    assert target.nodes == [("10.0.0.1", 26379), ("s2", 26380)]
    assert (target.service_name, target.db) == ("mymaster", 3)
    assert (target.username, target.password) == ("u", "p@ss")
    query = parse_redis_url("redis+sentinel://h:26379?service_name=other")
    assert query.service_name == "other"


def test_cluster_url_parts() -> None:
    target = parse_redis_url("redis+cluster://[::1]:7000,h2:7001")
    assert target.kind == "cluster"
    assert target.nodes == [("::1", 7000), ("h2", 7001)]
    assert parse_redis_url("redis://h:1/2").kind == "redis"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h:26379", "service name"),
        ("redis+sentinel://h/mymaster", "host:port"),
        ("redis+cluster://h:7000/0", "no database"),
        ("redis+cluster://h:0", "host:port"),
        ("redis+cluster://h:x,h:7001", "host:port"),
        ("redis+sentinel://h:1/m?db=x", "db must be a number"),
        ("redis+other://h:1", "must be"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redis_url(url)


@pytest.mark.parametrize("section", ["storage", "rate_limit"])
def test_settings_accept_and_refuse(section: str) -> None:
    field = "url" if section == "storage" else "storage"
    url = "redis+cluster://h1:7000,h2:7000"
    settings = load_settings(**{section: {field: url}})
    assert getattr(getattr(settings, section), field) == url
    with pytest.raises(ConfigError, match="service name"):
        load_settings(**{section: {field: "redis+sentinel://h:26379"}})


def test_counters_follow_a_cluster_store_and_use_limits_forms() -> None:
    settings = load_settings(storage={"url": "redis+sentinel://h:26379/m"})
    assert settings.rate_limit_storage_url() == "redis+sentinel://h:26379/m"
    assert limits_uri("redis+cluster://h:1") == "async+redis+cluster://h:1"
    assert limits_uri("unix:///tmp/r.sock") == "async+redis+unix:///tmp/r.sock"
