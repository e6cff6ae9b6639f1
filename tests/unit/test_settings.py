"""Settings (SPEC §12): TOML plus GATEWAY_<SECTION>__<KEY>; every problem is a ConfigError
that names the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.settings import ConfigError, load_settings, parse_host_port


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "gateway.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.storage.url == "sqlite:///gateway.db"
    assert settings.keys.prefix == "gw" and settings.keys.rotation_days == 90
    assert settings.rate_limit.default == "60/minute"
    assert settings.usage.recent_per_key == 1000
    assert settings.rate_limit_storage_url() == "memory://"


def test_toml_values_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
[server]
listen = "0.0.0.0:9000"
trusted_proxies = ["10.0.0.0/8"]

[storage]
url = "sqlite:///data/gw.db"

[keys]
prefix = "acme"
cache_ttl = 5

[[routes]]
prefix = "/public"
public = true

[[routes]]
prefix = "/admin"
scope = "admin"
""",
    )
    settings = load_settings(path)
    assert settings.server.listen == "0.0.0.0:9000"
    assert settings.keys.prefix == "acme" and settings.keys.cache_ttl == 5
    assert [r.prefix for r in settings.routes] == ["/public", "/admin"]
    assert settings.routes[1].scope == "admin"

    monkeypatch.setenv("GATEWAY_STORAGE__URL", "redis://localhost:6379/2")
    monkeypatch.setenv("GATEWAY_KEYS__CACHE_TTL", "7.5")
    settings = load_settings(path)
    assert settings.storage.url == "redis://localhost:6379/2"
    assert settings.keys.cache_ttl == 7.5
    assert settings.keys.prefix == "acme"  # the rest of the section still from the file
    assert settings.rate_limit_storage_url() == "redis://localhost:6379/2"

    # GATEWAY_CONFIG names the file when no path is given.
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    assert load_settings().server.listen == "0.0.0.0:9000"

    # Explicit overrides (command-line flags) win over both.
    settings = load_settings(path, server={"listen": "127.0.0.1:1"})
    assert settings.server.listen == "127.0.0.1:1"
    assert settings.server.trusted_proxies == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("[keys]\nnope = 1\n", "keys.nope", "unknown setting"),
        ("nope = 1\n", "nope", "unknown setting"),
        ("[nope]\na = 1\n", "nope", "unknown setting"),
        ('_env_file = "/etc/passwd"\n', "_env_file", "unknown setting"),
        ("_cli_parse_args = true\n", "_cli_parse_args", "unknown setting"),
        ('[usage]\nrecent_per_key = "lots"\n', "usage.recent_per_key", "integer"),
        ("[usage]\nflush_interval = inf\n", "usage.flush_interval", "finite"),
        ("[keys]\ncache_ttl = nan\n", "keys.cache_ttl", ""),
        ('[storage]\nurl = "mysql://db"\n', "storage.url", "sqlite:///path.db or redis://"),
        ('[storage]\nurl = "sqlite://"\n', "storage.url", "file path"),
        ('[upstream]\nurl = "ftp://x"\n', "upstream.url", "http"),
        ('[upstream]\nurl = "http://x:99999"\n', "upstream.url", "port"),
        ('[server]\nlisten = "nohost"\n', "server.listen", "HOST:PORT"),
        ('[server]\ntrusted_proxies = ["1.2.3.4/99"]\n', "server.trusted_proxies", "IP"),
        ('[keys]\nprefix = "Bad_Prefix"\n', "keys.prefix", "prefix"),
        ('[rate_limit]\ndefault = "often"\n', "rate_limit.default", "limit"),
        ('[rate_limit]\nstrategy = "token-bucket"\n', "rate_limit.strategy", ""),
        ('[rate_limit]\nstorage = "mongodb://x"\n', "rate_limit.storage", "memory://"),
        ("[auth]\nheaders = []\n", "auth.headers", "at least one"),
        ('[[routes]]\nprefix = "nope"\n', "routes.0.prefix", "'/'"),
        ("routes = [1]\n", "routes.0", ""),
        ("keys = 5\n", "keys", ""),
    ],
)
def test_bad_settings_name_file_and_field(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{field}:" in message
    assert reason in message


def test_bad_environment_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_USAGE__RECENT_PER_KEY", "abc")
    with pytest.raises(ConfigError, match=r"environment: usage\.recent_per_key"):
        load_settings()
    monkeypatch.delenv("GATEWAY_USAGE__RECENT_PER_KEY")
    monkeypatch.setenv("GATEWAY_KEYS__NOPE", "1")
    with pytest.raises(ConfigError, match=r"keys\.nope: unknown setting"):
        load_settings()


def test_bad_override_names_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"command line: server\.listen"):
        load_settings(server={"listen": "nope"})


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml: configuration file not found"):
        load_settings(missing)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path)  # a directory
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(write(tmp_path, b"\xff\xfe[keys]\n"))
    path = write(tmp_path, "[keys\nprefix = 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid TOML")):
        load_settings(path)


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_host_port("[::1]:8001") == ("::1", 8001)
    for bad in ("", ":80", "host:", "host:x", "host:70000", "host"):
        with pytest.raises(ValueError):
            parse_host_port(bad)


# --- nothing but ConfigError, whatever the file says ------------------------------------

SECTIONS = ["server", "upstream", "storage", "keys", "auth", "rate_limit", "usage", "nope"]
NAMES = [
    "listen",
    "admin_listen",
    "trusted_proxies",
    "max_body_bytes",
    "max_header_bytes",
    "max_headers",
    "header_timeout",
    "keepalive_timeout",
    "tls_cert",
    "tls_key",
    "url",
    "connect_timeout",
    "read_timeout",
    "max_connections",
    "prefix",
    "cache_ttl",
    "rotation_days",
    "headers",
    "site_header",
    "site_path_prefix",
    "failed_attempts_limit",
    "default",
    "strategy",
    "storage",
    "on_backend_error",
    "legacy_headers",
    "recent_per_key",
    "daily_retention_days",
    "flush_interval",
    "scope",
    "public",
    "_env_file",
    "model_config",
    "x",
]
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f))
    ),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(
        [
            '"sqlite:///x.db"',
            '"redis://h:1/0"',
            '"10/second;5/day"',
            '"127.0.0.1:1"',
            '"/p"',
            "1979-05-27T07:32:00Z",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(NAMES), inner), max_size=3).map(
            lambda kv: "{" + ", ".join(f"{k} = {v}" for k, v in dict(kv).items()) + "}"
        ),
    ),
    max_leaves=6,
)
lines = st.one_of(
    st.sampled_from(SECTIONS).map(lambda s: f"[{s}]"),
    st.just("[[routes]]"),
    st.tuples(st.sampled_from(NAMES), values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=15),  # plain garbage
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.lists(lines, max_size=8).map("\n".join))
def test_any_file_gives_settings_or_config_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    try:
        load_settings(path)
    except ConfigError as error:
        assert str(path) in str(error)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=60))
def test_any_bytes_give_settings_or_config_error(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "g.toml"
        path.write_bytes(data)
        try:
            load_settings(path)
        except ConfigError as error:
            assert str(path) in str(error)


def test_relative_paths_in_a_config_file_follow_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.toml").write_text(
        '[storage]\nurl = "sqlite:///data/gw.db"\n[usage]\nspool_path = "spool/usage"\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings("../conf/gw.toml")
    assert settings.storage.url == f"sqlite:///{conf / 'data' / 'gw.db'}"
    assert settings.usage.spool_path == str(conf / "spool" / "usage")
    # Absolute paths stay; the environment's and the defaults' follow the working directory.
    (conf / "abs.toml").write_text('[storage]\nurl = "sqlite:////srv/gw.db"\n', encoding="utf-8")
    assert load_settings(conf / "abs.toml").storage.url == "sqlite:////srv/gw.db"
    monkeypatch.setenv("GATEWAY_STORAGE__URL", "sqlite:///here.db")
    assert load_settings(conf / "gw.toml").storage.url == "sqlite:///here.db"
    monkeypatch.delenv("GATEWAY_STORAGE__URL")
    assert load_settings().storage.url == "sqlite:///gateway.db"
    (conf / "redis.toml").write_text('[storage]\nurl = "redis://h:6379/0"\n', encoding="utf-8")
    assert load_settings(conf / "redis.toml").storage.url == "redis://h:6379/0"


def test_a_mistyped_setting_in_the_file_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nlistn = "127.0.0.1:9"\n[storag]\nurl = "sqlite:///x.db"\n'
        '[[routes]]\nprefix = "/a"\npublik = true\n[usage]\nzzz = 1\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "server.listn: unknown setting; did you mean 'listen'?" in message
    assert "storag: unknown setting; did you mean 'storage'?" in message
    assert "routes.0.publik: unknown setting; did you mean 'public'?" in message
    assert "usage.zzz: unknown setting\n" in message + "\n"  # nothing close: no guess
