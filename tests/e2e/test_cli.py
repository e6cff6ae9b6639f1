"""The `gateway` command as users run it: a real process on a real SQLite file (SPEC §10).

Every `--json` output is compared with the body the admin API renders for the same
record (gateway.keys.render), read back from the store in-process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import cli
from gateway.keys import render
from gateway.keys.model import utcnow
from gateway.runtime import key_service
from gateway.settings import Settings, load_settings
from gateway.store.base import UsageRecord

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "config" / "gateway.toml"
NEW = ("keys", "create", "--name", "x", "--scope", "read")
NO_KEY = "key_0000000000000000"
GRACE = "gracePeriodSeconds"


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout: {self.out}\nstderr: {self.err}>"


Cli = Callable[..., Result]


def run_gateway(*args: str, env: dict[str, str] | None = None) -> Result:
    """`python -m gateway ARGS` with no terminal on stdin; never prints a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    result = Result(proc)
    assert "Traceback" not in result.err, result
    assert "Traceback" not in result.out, result
    return result


@pytest.fixture
def gateway_env(sqlite_url: str) -> dict[str, str]:
    env = dict(os.environ)  # carries the test GATEWAY_SECRET (tests/conftest.py)
    env["GATEWAY_STORAGE__URL"] = sqlite_url
    env.pop("GATEWAY_CONFIG", None)
    return env


@pytest.fixture
def gw(gateway_env: dict[str, str]) -> Cli:
    def run(*args: str, **extra_env: str) -> Result:
        return run_gateway(*args, env={**gateway_env, **extra_env})

    return run


@pytest.fixture
def settings_(sqlite_url: str) -> Settings:
    return load_settings(storage={"url": sqlite_url})


def create(gw: Cli, *args: str) -> dict[str, Any]:
    result = gw("keys", "create", "--json", *args)
    assert result.code == 0, result
    return result.json()


# --- the lifecycle, with --json bodies equal to the admin API's ---------------------------


async def test_lifecycle_json_bodies_equal_the_api_bodies(gw: Cli, settings_: Settings) -> None:
    created = create(gw, "--name", "billing", "--scope", "read", "--site", "a", "--site", "b")
    key_id, first_secret = created["apiKey"]["id"], created["secret"]
    async with key_service(settings_) as service:
        key = await service.get(key_id)
        assert created == render.key_value_body(key, first_secret)
        assert key.sites == ("a", "b") and key.rate_limit is None and key.expires_at is None
        assert (await service.store.lookup_digest(service.digest(first_secret))) is not None

    listed = gw("keys", "list", "--json")
    assert listed.code == 0, listed
    async with key_service(settings_) as service:
        assert listed.json() == render.key_list_body(await service.list())

    shown = gw("keys", "show", key_id, "--json")
    assert shown.code == 0, shown
    async with key_service(settings_) as service:
        assert shown.json() == render.details_body(*await service.details(key_id))

    edited = gw(
        "keys", "edit", key_id, "--name", "billing v2", "--scope", "write", "--all-sites",
        "--rate-limit", "10/second;5000/day", "--expires-in", "90d", "--json",
    )  # fmt: skip
    assert edited.code == 0, edited
    async with key_service(settings_) as service:
        key = await service.get(key_id)
        assert edited.json() == render.key_body(key)
    assert key.name == "billing v2" and key.scope == "write" and key.sites == ("*",)
    assert key.rate_limit == "10/second;5000/day"
    assert key.expires_at is not None
    assert abs(key.expires_at - (utcnow() + timedelta(days=90))) < timedelta(minutes=5)

    back = gw("keys", "edit", key_id, "--default-rate-limit", "--no-expiry", "--json")
    assert back.code == 0, back
    assert back.json()["apiKey"]["rateLimit"] is None
    assert back.json()["apiKey"]["expiresAt"] is None

    rotated = gw("keys", "rotate", key_id, "--yes", "--json")
    assert rotated.code == 0, rotated
    second_secret = rotated.json()["secret"]
    assert second_secret != first_secret
    assert "shown only once" in rotated.err
    async with key_service(settings_) as service:
        key = await service.get(key_id)
        assert rotated.json() == render.key_value_body(key, second_secret)
        assert (await service.store.lookup_digest(service.digest(first_secret))) is None
        assert (await service.store.lookup_digest(service.digest(second_secret))) is not None

    revoked = gw("keys", "revoke", key_id, "--yes", "--json")
    assert revoked.code == 0, revoked
    assert revoked.json()["apiKey"]["status"] == "revoked"
    async with key_service(settings_) as service:
        assert revoked.json() == render.key_body(await service.get(key_id))
    again = gw("keys", "revoke", key_id, "--yes", "--json")
    assert again.code == 0 and again.json() == revoked.json(), again  # idempotent

    deleted = gw("keys", "delete", key_id, "--yes", "--json")
    assert deleted.code == 0, deleted
    assert deleted.out == ""  # the API answers 204 No Content

    gone = gw("keys", "show", key_id, "--json")
    assert gone.code == 1, gone
    assert gone.json()["error"]["code"] == "KEY_NOT_FOUND"

    audit = gw("keys", "audit", "--key-id", key_id, "--json")
    assert audit.code == 0, audit
    actions = [event["action"] for event in audit.json()["data"]]
    assert actions == ["delete", "revoke", "rotate", "edit", "edit", "create"]
    assert {event["actor"] for event in audit.json()["data"]} == {"cli"}
    async with key_service(settings_) as service:
        assert audit.json() == render.audit_list_body(await service.audit(key_id))
    alias = gw("audit", "--key-id", key_id, "--json")
    assert alias.code == 0 and alias.json() == audit.json(), alias

    # The values appeared in the create and rotate outputs only.
    for result in (listed, shown, edited, back, revoked, deleted, gone, audit):
        assert first_secret not in result.out + result.err
        assert second_secret not in result.out + result.err


async def test_list_filters_and_pages(gw: Cli) -> None:
    ids = [create(gw, "--name", f"k{i}", "--scope", "read")["apiKey"]["id"] for i in range(3)]
    assert gw("keys", "revoke", ids[0], "--yes").code == 0

    def listed(*args: str) -> dict[str, Any]:
        result = gw("keys", "list", "--json", *args)
        assert result.code == 0, result
        return result.json()

    assert [k["id"] for k in listed()["data"]] == ids[::-1]
    assert [k["id"] for k in listed("--status", "active")["data"]] == ids[:0:-1]
    assert [k["id"] for k in listed("--status", "revoked")["data"]] == ids[:1]
    first = listed("--limit", "2")
    assert len(first["data"]) == 2 and first["nextCursor"]
    rest = listed("--limit", "2", "--cursor", first["nextCursor"])
    assert [k["id"] for k in first["data"] + rest["data"]] == ids[::-1]
    assert rest["nextCursor"] is None
    # The human "next page" line repeats the options that shape the page.
    human = gw("keys", "list", "--limit", "1", "--status", "active")
    cursor = listed("--limit", "1", "--status", "active")["nextCursor"]
    line = f"gateway keys list --status active --limit 1 --cursor {cursor}"
    assert human.out.rstrip().endswith(line), human


async def test_an_expired_key_is_listed_and_shown_as_expired(gw: Cli) -> None:
    key = create(gw, "--name", "short-lived", "--scope", "read", "--expires-in", "1s")["apiKey"]
    assert key["expired"] is False
    deadline = time.monotonic() + 10
    while (shown := gw("keys", "show", key["id"], "--json").json())["apiKey"]["expired"] is False:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert shown["apiKey"]["status"] == "active"  # the contract's status does not change
    row = next(line for line in gw("keys", "list").out.splitlines() if key["id"] in line)
    assert " expired " in row and " active " not in row
    assert "status:       expired" in gw("keys", "show", key["id"]).out


async def test_create_options_become_the_api_fields(gw: Cli) -> None:
    at = create(gw, "--name", "a", "--scope", "admin", "--expires-at", "2099-01-02T03:04:05Z")
    assert at["apiKey"]["expiresAt"] == "2099-01-02T03:04:05Z"
    assert at["apiKey"]["sites"] == ["*"]
    offset = create(
        gw, "--name", "b", "--scope", "write", "--expires-at", "2099-01-02T03:04:05+02:00"
    )
    assert offset["apiKey"]["expiresAt"] == "2099-01-02T01:04:05Z"
    limited = create(gw, "--name", "c", "--scope", "read", "--rate-limit", "100/minute")
    assert limited["apiKey"]["rateLimit"] == "100/minute"
    for duration, delta in (("12h", timedelta(hours=12)), ("30m", timedelta(minutes=30))):
        body = create(gw, "--name", "d", "--scope", "read", "--expires-in", duration)
        expires = body["apiKey"]["expiresAt"]
        expected = (utcnow() + delta).strftime("%Y-%m-%dT%H")
        assert expires.startswith(expected[:-1]), (expires, expected)


# --- human output --------------------------------------------------------------------------


async def test_human_output(gw: Cli, settings_: Settings) -> None:
    made = gw("keys", "create", "--name", "web shop", "--scope", "write", "--site", "shop-1")
    assert made.code == 0, made
    secret = made.out.strip().splitlines()[-1]
    assert secret.startswith("gw_") and len(secret) == 41
    assert "shown only once" in made.err and secret not in made.err

    listed = gw("keys", "list")
    assert listed.code == 0, listed
    header, row = listed.out.splitlines()[:2]
    for column in ("ID", "NAME", "HINT", "SCOPE", "SITES", "STATUS", "CREATED", "LAST USED"):
        assert column in header
    for cell in ("web shop", "write", "shop-1", "active", "gw_"):
        assert cell in row
    key_id = row.split()[0]

    async with key_service(settings_) as service:
        await service.store.record_usage(
            [
                UsageRecord(key_id, utcnow(), "GET", "/v1/orders", 200, 12.5, "shop-1"),
                UsageRecord(key_id, utcnow(), "POST", "/v1/orders", 429, 3.0, "shop-1"),
            ]
        )
        today = utcnow().date().isoformat()
    shown = gw("keys", "show", key_id)
    assert shown.code == 0, shown
    assert "web shop" in shown.out and "Total requests: 2" in shown.out
    daily = [line for line in shown.out.splitlines() if line.startswith(today)]
    assert daily and daily[0].split() == [today, "2", "1"]
    assert shown.out.count("/v1/orders") == 2
    assert secret not in shown.out + listed.out

    assert "No keys." in gw("keys", "list", "--status", "revoked").out
    audit = gw("audit")
    assert audit.code == 0 and "create" in audit.out and key_id in audit.out, audit


# --- confirmation ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["rotate", "revoke", "delete"])
async def test_confirmation_is_refused_without_a_terminal(gw: Cli, command: str) -> None:
    key = create(gw, "--name", "keep", "--scope", "read")["apiKey"]
    result = gw("keys", command, key["id"], "--json")
    assert result.code == 2, result
    assert "--yes" in result.err and result.out == ""
    # Nothing changed.
    assert gw("keys", "show", key["id"], "--json").json()["apiKey"]["hint"] == key["hint"]
    assert gw("keys", "show", key["id"], "--json").json()["apiKey"]["status"] == "active"


def _read_until(fd: int, marker: bytes | None) -> bytes:
    """Read a terminal until `marker` shows up, or (None) until the child closes it."""
    output = b""
    while marker is None or marker not in output:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        output += chunk
    return output


def test_confirmation_on_a_terminal(sqlite_url: str) -> None:
    """On a terminal the command asks; "n" changes nothing, "y" goes ahead."""
    import pty

    runner = CliRunner()
    env = {"GATEWAY_STORAGE__URL": sqlite_url}
    made = runner.invoke(
        cli, ["keys", "create", "--name", "t", "--scope", "read", "--json"], env=env
    )
    key_id = json.loads(made.stdout)["apiKey"]["id"]

    def answer(reply: bytes) -> tuple[int, str]:
        pid, fd = pty.fork()
        if pid == 0:  # the child: stdin/stdout/stderr are the terminal
            os.environ["GATEWAY_STORAGE__URL"] = sqlite_url
            os.execv(sys.executable, [sys.executable, "-m", "gateway", "keys", "revoke", key_id])
        # The prompt may arrive in two writes ("[y/N]:" then " "): wait for all of it.
        output = _read_until(fd, b"[y/N]: ")
        assert output.endswith(b"[y/N]: "), output
        os.write(fd, reply + b"\n")
        output += _read_until(fd, None)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), output.decode()

    code, output = answer(b"n")
    assert code == 1 and "nothing changed" in output and "Traceback" not in output, output
    shown = runner.invoke(cli, ["keys", "show", key_id, "--json"], env=env)
    assert json.loads(shown.stdout)["apiKey"]["status"] == "active"
    code, output = answer(b"y")
    assert code == 0 and "revoked" in output, output


# --- exit codes and error envelopes ---------------------------------------------------------


async def test_rule_errors_exit_1_with_the_envelope(gw: Cli) -> None:
    active = create(gw, "--name", "live", "--scope", "read")["apiKey"]["id"]
    cases: list[tuple[tuple[str, ...], str, str | None]] = [
        (("keys", "show", NO_KEY), "KEY_NOT_FOUND", None),
        (("keys", "show", "nonsense"), "KEY_NOT_FOUND", None),
        (("keys", "delete", active, "--yes"), "KEY_NOT_REVOKED", None),
        (("keys", "create", "--name", "   ", "--scope", "read"), "INVALID_REQUEST", "name"),
        (("keys", "create", "--name", "x" * 101, "--scope", "read"), "INVALID_REQUEST", "name"),
        (
            (*NEW, "--rate-limit", "lots"),
            "INVALID_REQUEST",
            "rateLimit",
        ),
        (
            (*NEW, "--site", "no spaces"),
            "INVALID_REQUEST",
            "sites",
        ),
        (
            (*NEW, "--expires-at", "2001-01-01T00:00:00Z"),
            "INVALID_REQUEST",
            "expiresAt",
        ),
        (
            (*NEW, "--expires-at", "tomorrow"),
            "INVALID_REQUEST",
            "expiresAt",
        ),
        (
            (*NEW, "--expires-at", "9999-12-31T23:59:59-23:59"),
            "INVALID_REQUEST",
            "expiresAt",
        ),
        (("keys", "rotate", active, "--yes", "--grace-period", "604801"), "INVALID_REQUEST", GRACE),
        (("keys", "list", "--limit", "0"), "INVALID_REQUEST", "limit"),
        (("keys", "list", "--cursor", "abc"), "INVALID_REQUEST", "cursor"),
        (("audit", "--key-id", "bad"), "INVALID_REQUEST", "keyId"),
    ]
    for args, code, field in cases:
        result = gw(*args, "--json")
        assert result.code == 1, (args, result)
        error = result.json()["error"]
        assert error["code"] == code, (args, result)
        assert set(error) == {"code", "message", "details", "requestId"}
        assert len(error["requestId"]) == 32
        if field is not None:
            assert error["details"]["field"] == field, (args, result)
    # Without --json: one line on stderr naming the code, nothing on stdout.
    for args, code, _ in cases[::4]:
        human = gw(*args)
        assert human.code == 1 and human.out == "", (args, human)
        assert human.err.startswith("Error: ") and code in human.err, (args, human)
        assert len(human.err.strip().splitlines()) == 1, human

    revoked = create(gw, "--name", "gone", "--scope", "read")["apiKey"]["id"]
    assert gw("keys", "revoke", revoked, "--yes").code == 0
    result = gw("keys", "rotate", revoked, "--yes", "--json")
    assert result.code == 1 and result.json()["error"]["code"] == "KEY_REVOKED", result
    # Nothing was written by any failed command: just the two keys.
    assert len(gw("keys", "list", "--json").json()["data"]) == 2


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "create", "--scope", "read"),  # --name missing
        ("keys", "create", "--name", "x", "--scope", "owner"),
        (*NEW, "--expires-in", "soon"),
        (*NEW, "--expires-in", "999999w"),
        (*NEW, "--expires-in", "1d",
         "--expires-at", "2099-01-01T00:00:00Z"),
        ("keys", "edit", NO_KEY),  # nothing to change
        ("keys", "edit", NO_KEY, "--site", "a", "--all-sites"),
        ("keys", "edit", NO_KEY, "--rate-limit", "1/second", "--default-rate-limit"),
        ("keys", "edit", NO_KEY, "--expires-in", "1d", "--no-expiry"),
        ("keys", "list", "--status", "deleted"),
        ("keys", "rotate", NO_KEY, "--yes", "--grace-period", "soon"),
        ("keys", "show"),
        ("keys", "frobnicate"),
        ("nope",),
        ("serve", "--listen", "nowhere"),
        ("serve", "--upstream", "ftp://example.com"),
    ],
)  # fmt: skip
def test_bad_usage_exits_2(gw: Cli, args: tuple[str, ...]) -> None:
    result = gw(*args)
    assert result.code == 2, result
    assert result.out == "" and "Error" in result.err, result


def test_serve_flags_are_named_in_config_errors(gw: Cli) -> None:
    result = gw("serve", "--listen", "nowhere")
    assert "server.listen" in result.err and "command line" in result.err, result
    result = gw("serve", "--upstream", "ftp://example.com")
    assert "upstream.url" in result.err, result


def test_version_and_help(gw: Cli) -> None:
    version = gw("--version")
    assert version.code == 0 and version.out.startswith("gateway, version "), version
    helped = gw("--help")
    assert helped.code == 0
    for command in ("serve", "demo", "keys", "audit"):
        assert command in helped.out
    keys_help = gw("keys", "--help")
    for command in ("create", "list", "show", "edit", "rotate", "revoke", "delete", "audit"):
        assert command in keys_help.out


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('[server]\nlisten_on = "0.0.0.0:80"\n', "server.listen_on"),
        ('[usage]\nrecent_per_key = "many"\n', "usage.recent_per_key"),
        ('[keys]\nprefix = "Not-A-Prefix"\n', "keys.prefix"),
        ("[mystery]\nx = 1\n", "mystery"),
        ('[rate_limit]\ndefault = "fast"\n', "rate_limit.default"),
        ("[server\n", "not valid TOML"),
        (b"\xff\xfe[server]\n", "cannot read"),
    ],
)
def test_bad_config_names_file_and_field(
    gw: Cli, tmp_path: Path, content: str | bytes, field: str
) -> None:
    path = tmp_path / "bad.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    for result in (
        gw("--config", str(path), "keys", "list"),
        gw("keys", "list", "--json", GATEWAY_CONFIG=str(path)),
    ):
        assert result.code == 2, result
        assert str(path) in result.err and field in result.err, result
        assert result.out == ""
        assert len(result.err.strip().splitlines()) == 1, result


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_config_file(gw: Cli, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "missing.toml" if kind == "missing" else tmp_path
    result = gw("--config", str(path), "keys", "list")
    assert result.code == 2 and str(path) in result.err, result


def test_bad_environment_setting_is_named(gw: Cli) -> None:
    result = gw("keys", "list", GATEWAY_USAGE__RECENT_PER_KEY="lots")
    assert result.code == 2 and "usage.recent_per_key" in result.err, result


def test_example_config_loads_with_every_default() -> None:
    # Its relative store path is relative to the file's folder (SPEC §10).
    default = Settings().model_dump()
    default["storage"]["url"] = f"sqlite:///{EXAMPLE_CONFIG.parent / 'gateway.db'}"
    assert load_settings(EXAMPLE_CONFIG).model_dump() == default


def test_example_config_runs_the_cli(gw: Cli) -> None:
    # (GATEWAY_STORAGE__URL points at a new store; only a command that writes creates it.)
    result = gw("--config", str(EXAMPLE_CONFIG), "keys", "list", "--json")
    assert result.code == 1 and "there is no key store at" in result.err, result
    assert gw("--config", str(EXAMPLE_CONFIG), *NEW).code == 0
    result = gw("--config", str(EXAMPLE_CONFIG), "keys", "list", "--json")
    assert result.code == 0 and len(result.json()["data"]) == 1, result


def test_redis_without_secret_exits_2(gateway_env: dict[str, str]) -> None:
    env = {**gateway_env, "GATEWAY_STORAGE__URL": "redis://127.0.0.1:6399/0"}
    env.pop("GATEWAY_SECRET")
    result = run_gateway("keys", "list", env=env)
    assert result.code == 2 and "GATEWAY_SECRET" in result.err, result


def test_short_secret_exits_2(gw: Cli) -> None:
    result = gw("keys", "list", GATEWAY_SECRET="short")
    assert result.code == 2 and "GATEWAY_SECRET" in result.err, result


def test_another_secret_is_refused(gw: Cli) -> None:
    create(gw, "--name", "x", "--scope", "read")
    result = gw("keys", "list", GATEWAY_SECRET="another-secret-" + "y" * 40)
    assert result.code == 2 and "different server secret" in result.err, result


def test_generated_secret_file_for_sqlite(gateway_env: dict[str, str], sqlite_url: str) -> None:
    env = dict(gateway_env)
    env.pop("GATEWAY_SECRET")
    first = run_gateway(*NEW, "--json", env=env)
    assert first.code == 0, first
    secret_file = Path(sqlite_url.removeprefix("sqlite://") + ".secret")
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert "server secret" in first.err
    assert run_gateway("keys", "list", env=env).code == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["sqlite-directory", "redis-down"])
def test_unreachable_store_is_one_line_exit_1(gw: Cli, tmp_path: Path, kind: str) -> None:
    url = (
        f"sqlite:///{tmp_path}"
        if kind == "sqlite-directory"
        else f"redis://127.0.0.1:{_free_port()}/0"
    )
    result = gw("keys", "list", GATEWAY_STORAGE__URL=url)
    assert result.code == 1, result
    assert len(result.err.strip().splitlines()) == 1 and result.err.startswith("Error: "), result


# --- random arguments never crash the command ------------------------------------------------

_TOKENS = st.sampled_from(
    [
        "--name", "--scope", "--site", "--rate-limit", "--expires-at", "--expires-in", "--json",
        "read", "write", "admin", "*", "90d", "0s", "100/minute", "2099-01-01T00:00:00Z", "-",
        "--", "--help", "",
    ]
)  # fmt: skip
_ARGS = st.lists(st.one_of(_TOKENS, st.text(max_size=30)), max_size=10)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(args=_ARGS)
def test_random_create_arguments_never_crash(sqlite_url: str, args: list[str]) -> None:
    result = CliRunner().invoke(
        cli, ["keys", "create", *args], env={"GATEWAY_STORAGE__URL": sqlite_url}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 0 and "--help" not in args:
        assert "gw_" in result.stdout


# --- packaging: the README's commands are the ones CI runs ------------------------------------


def test_readme_setup_commands_match_ci() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    commands = [line.split("#")[0].strip() for line in readme[:6] if line.startswith("pip ")]
    assert commands == [
        "pip install -c requirements/lock.txt -e . && gateway demo",
        "pip install -c requirements/lock.txt -e '.[test]' && python -m pytest -q",
    ]
    assert (REPO / "requirements" / "lock.txt").is_file()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install --quiet -c requirements/lock.txt -e '.[test]'" in ci
    assert "--system-site-packages" not in ci.replace("No --system-site-packages", "")
    assert "python -m pytest -q" in ci and "GATEWAY_REQUIRE_SERVICES=1" in ci
    assert os.access(REPO / ".ci" / "run", os.X_OK)
