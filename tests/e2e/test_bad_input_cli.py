"""Bad arguments and bad settings given to the `gateway` command: one `Error:` line and the
documented exit code (1 for a rule, 2 for usage/configuration), never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from gateway.cli import cli

pytestmark = pytest.mark.e2e


def run(sqlite_url: str, *args: str, **env: str) -> Result:
    result = CliRunner().invoke(cli, list(args), env={"GATEWAY_STORAGE__URL": sqlite_url, **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [("keys", "list"), ("audit",)])
@pytest.mark.parametrize("cursor", ["²", "١٢"])
def test_a_unicode_digit_cursor_is_a_rule_error(
    sqlite_url: str, command: tuple[str, ...], cursor: str
) -> None:
    assert run(sqlite_url, "keys", "create", "--name", "x", "--scope", "read").exit_code == 0
    result = run(sqlite_url, *command, "--cursor", cursor)
    assert result.exit_code == 1
    assert "INVALID_REQUEST" in one_error_line(result)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GATEWAY_AUTH__HEADERS": "X-Key"}, "auth"),  # was a pydantic-settings traceback
        ({"GATEWAY_STORAGE_URL": "sqlite:///elsewhere.db"}, "GATEWAY_STORAGE__URL"),
        ({"GATEWAY_KEYS__ROTATION_DAYS": "999999999999"}, "keys.rotation_days"),
    ],
)
def test_a_bad_environment_setting_is_one_line_exit_2(
    sqlite_url: str, env: dict[str, str], named: str
) -> None:
    result = run(sqlite_url, "keys", "list", "--json", **env)
    assert result.exit_code == 2 and result.stdout == ""
    assert named in one_error_line(result)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0d", "more than zero"),  # was exit 1 naming 'expiresAt', not the option typed
        ("0s", "more than zero"),
        ("99999999d", "at most 100 years"),  # was "must be a number and a unit"
        ("9" * 40 + "w", "at most 100 years"),
        ("５d", "a number and a unit"),  # a full-width digit was taken as 5
        ("-5d", "a number and a unit"),
        ("5D", "a number and a unit"),
    ],
)
def test_a_bad_expires_in_is_a_usage_error_naming_the_option(
    sqlite_url: str, value: str, reason: str
) -> None:
    for command in (
        ("keys", "create", "--name", "x", "--scope", "read"),
        ("keys", "edit", "key_0000000000000000"),
    ):
        result = run(sqlite_url, *command, "--expires-in", value)
        assert result.exit_code == 2, result.output
        assert "--expires-in" in result.stderr and reason in result.stderr
    # Nothing was created: not even the store.
    assert "there is no key store" in run(sqlite_url, "keys", "list").stderr
