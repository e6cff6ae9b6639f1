"""The `gateway` command (SPEC §10): run the gateway, and manage keys on the configured store.

Every key command goes through `KeyService`, building the same request models the admin
API parses (`KeyCreate`, `KeyEdit`, `KeyRotate`), and `--json` prints the body the admin
API would answer, rendered by `gateway.keys.render`.

Exit codes: 0 success; 1 an error from the rules (the API's 4xx: not found, conflict,
invalid value) or a backend that cannot be reached; 2 bad usage or bad configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click

from gateway import __version__
from gateway.errors import GatewayError, new_request_id
from gateway.keys import render
from gateway.keys.model import (
    ACCESS_LEVELS,
    ALL_SITES,
    MAX_GRACE_SECONDS,
    ApiKey,
    KeyCreate,
    KeyEdit,
    KeyRotate,
    Status,
    parse_body,
    rfc3339,
    utcnow,
)
from gateway.keys.service import KeyService
from gateway.settings import ConfigError, Settings, load_settings
from gateway.store.base import StoreError
from gateway.store.presence import WAIT_SECONDS, wait_applied
from gateway.urls import missing_store

T = TypeVar("T")

EXIT_RULES = 1
EXIT_USAGE = 2

SHOWN_ONCE = "This key value is shown only once: store it now, it cannot be retrieved later."

# --expires-in: a whole number and a unit. The cap keeps the date representable.
_DURATION = re.compile(r"([0-9]+)([smhdw])")  # ASCII digits: \d also takes "５"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_DURATION = timedelta(days=365 * 100)


# --- failures ----------------------------------------------------------------------------


class _Declined(Exception):
    """The user answered no to a confirmation."""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _failures(as_json: bool, request_id: str, doing: str) -> Iterator[None]:
    """Turn the errors a command can meet into one message and the documented exit code.

    `doing` says what an OSError interrupted (e.g. "open the key store")."""
    try:
        yield
    except GatewayError as error:
        if as_json:
            click.echo(json.dumps(error.envelope(request_id), indent=2))
        else:
            click.echo(f"Error: {error.message} [{error.code}]", err=True)
        sys.exit(EXIT_RULES)
    except ConfigError as error:
        _fail(str(error), EXIT_USAGE)
    except StoreError as error:
        _fail(f"the key store cannot be reached: {error}", EXIT_RULES)
    except OSError as error:
        _fail(f"cannot {doing}: {error}", EXIT_RULES)
    except (_Declined, click.Abort):
        _fail("not confirmed; nothing changed.", EXIT_RULES)
    except Exception as error:  # a bug: still one line for the user, never a traceback
        _fail(f"unexpected failure ({type(error).__name__}: {error})", EXIT_RULES)


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    """The settings (loaded once per command); a bad configuration exits with code 2."""
    if not overrides and "settings" in ctx.obj:
        return ctx.obj["settings"]
    try:
        settings = load_settings(ctx.obj["config"], **overrides)
    except ConfigError as error:
        _fail(str(error), EXIT_USAGE)
    if not overrides:
        ctx.obj["settings"] = settings
    return settings


@contextlib.contextmanager
def _log_lines_to_stderr() -> Iterator[None]:
    """While a key command runs, let the gateway's informational log lines (e.g. "created a
    server secret") reach stderr, so stdout stays the command's output."""
    logger = logging.getLogger("gateway")
    handler, level = _EchoHandler(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _EchoHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it).

    The Redis link's liveness lines ("Redis is failing; probing…") are left out: they are
    for a running server, while a command reports a failure once, as its `Error:` line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("gateway.redis")

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _run_with_service(
    ctx: click.Context,
    as_json: bool,
    action: Callable[[KeyService, str], Awaitable[T]],
    *,
    reads_only: bool = False,
) -> T:
    """Open the configured store, run `action(service, request_id)`, close the store.

    With `reads_only`, a store that does not exist is an error naming its path: a command
    that only reads never creates one (nor its secret file)."""
    from gateway.runtime import key_service

    settings = _settings(ctx)
    request_id = new_request_id()
    missing = missing_store(settings.storage.url) if reads_only else None
    if missing is not None:
        from gateway.secret import secret_from_environment

        with _failures(as_json, request_id, "read GATEWAY_SECRET"):
            secret_from_environment()  # a bad secret is reported first (exit 2)
        _fail(
            f"there is no key store at {missing} (storage.url = {settings.storage.url!r}); "
            "nothing was created. Check --config / GATEWAY_CONFIG and storage.url "
            "(a relative path in a config file is relative to that file's folder).",
            EXIT_RULES,
        )

    async def run() -> T:
        async with key_service(settings) as service:
            return await action(service, request_id)

    with _failures(as_json, request_id, "open the key store"), _log_lines_to_stderr():
        return asyncio.run(run())
    raise AssertionError("unreachable: _failures exits on every error")


async def _reach_gateways(service: KeyService) -> None:
    """After a change: wait (at most WAIT_SECONDS) until every running gateway on the store
    has applied it, and name on stderr any that has not (SPEC §10)."""
    behind = await wait_applied(service.store)
    if behind:
        names = "; ".join(f"{g.label} (gateway {g.id})" for g in behind)
        click.echo(
            f"Warning: the change is saved, but {len(behind)} running gateway"
            f"{'s have' if len(behind) > 1 else ' has'} not applied it after "
            f"{WAIT_SECONDS:g} s: {names}. It may still accept the old key state "
            "until it catches up.",
            err=True,
        )


# --- options shared by the key commands ------------------------------------------------


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the admin API's JSON response body (or its error envelope).",
    )(fn)


def _yes_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--yes", "-y", is_flag=True, help="Do not ask to confirm.")(fn)


def _parse_duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise click.BadParameter(
            "must be a number and a unit: s, m, h, d or w (e.g. 90d, 12h, 30m)",
            param_hint="'--expires-in'",
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise click.BadParameter("must be more than zero", param_hint="'--expires-in'")
    # Compared as a number first: timedelta() itself overflows on e.g. 99999999999d.
    if seconds > _MAX_DURATION.total_seconds():
        raise click.BadParameter("must be at most 100 years", param_hint="'--expires-in'")
    return timedelta(seconds=seconds)


def _exclusive(**options: Any) -> None:
    given = [name for name, value in options.items() if value not in (None, False, ())]
    if len(given) > 1:
        names = " and ".join(f"--{name.replace('_', '-')}" for name in given)
        raise click.UsageError(f"{names} cannot be used together.")


def _expiry(expires_at: str | None, expires_in: str | None) -> str | datetime | None:
    """The expiresAt value: an RFC 3339 string (checked by the model, like the API's) or
    now + the duration."""
    if expires_in is not None:
        return utcnow() + _parse_duration(expires_in)
    return expires_at


def _confirm_fast(yes: bool) -> None:
    """Without a terminal and without --yes, refuse (exit 2) before touching the store."""
    if not yes and not sys.stdin.isatty():
        _fail("this command asks for confirmation; pass --yes to run it without a terminal.", 2)


def _confirm(yes: bool, question: str) -> None:
    """Ask on a terminal; without one, refuse unless --yes was given (exit 2)."""
    if yes:
        return
    _confirm_fast(yes)
    if not click.confirm(question, default=False, err=True):
        raise _Declined


# --- human output ------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return (rfc3339(moment) or "-").replace("T", " ").removesuffix("Z")


def _status(key: ApiKey) -> str:
    """The status a user reads: an active key past its expiry shows as expired."""
    return "expired" if key.status is Status.ACTIVE and key.expired() else key.status.value


def _sites(key: ApiKey) -> str:
    return "all" if ALL_SITES in key.sites else ",".join(key.sites)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def _echo_key(key: ApiKey, rotation_days: int) -> None:
    rows = [
        ("id", key.id),
        ("name", key.name),
        ("hint", key.hint),
        ("scope", key.scope.value),
        ("sites", _sites(key)),
        ("status", _status(key)),
        ("rate limit", key.rate_limit or "default"),
        ("created", _when(key.created_at)),
        ("updated", _when(key.updated_at)),
        ("last used", _when(key.last_used_at)),
        ("expires", _when(key.expires_at) if key.expires_at else "never"),
        ("revoked", _when(key.revoked_at)),
        ("rotated", _when(key.rotated_at)),
        ("rotation due", "yes" if key.rotation_due(rotation_days) else "no"),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<14}{value}")


def _echo_key_value(key: ApiKey, key_value: str, as_json: bool, rotation_days: int) -> None:
    if as_json:
        click.echo(json.dumps(render.key_value_body(key, key_value, rotation_days), indent=2))
    else:
        _echo_key(key, rotation_days)
        click.echo("")
        click.echo(key_value)
    click.echo(f"Warning: {SHOWN_ONCE}", err=True)


def _same_options(**options: tuple[Any, Any]) -> str:
    """The options (name: (value, default)) a "next page" line repeats: those not default."""
    given = [(name, value) for name, (value, default) in options.items() if value != default]
    return "".join(f" --{name.replace('_', '-')} {value}" for name, value in given)


def _echo_json(body: dict[str, Any]) -> None:
    click.echo(json.dumps(body, indent=2))


# --- the command group -------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    envvar="GATEWAY_CONFIG",
    metavar="PATH",
    help="TOML configuration file (also $GATEWAY_CONFIG).",
)
@click.version_option(__version__, "--version", prog_name="gateway")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Gateway: an API-key gateway for HTTP APIs.

    Settings come from the TOML file given with --config and from GATEWAY_<SECTION>__<KEY>
    environment variables (e.g. GATEWAY_STORAGE__URL).
    """
    ctx.ensure_object(dict)
    ctx.obj["config"] = config or None


def _run_server(entry: str, call: Callable[[Any], Any]) -> None:
    """Import gateway.server lazily (it pulls in the whole request path) and run it."""
    import gateway.server as server

    with _failures(False, new_request_id(), f"run 'gateway {entry}'"):
        try:
            result = call(server)
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except KeyboardInterrupt:
            click.echo("Stopped.", err=True)


@cli.command()
@click.option("--listen", metavar="HOST:PORT", help="Proxy listener (server.listen).")
@click.option(
    "--admin-listen", metavar="HOST:PORT", help="Admin API listener (server.admin_listen)."
)
@click.option("--upstream", metavar="URL", help="Upstream base URL (upstream.url).")
@click.option(
    "--authz-listen",
    metavar="HOST:PORT",
    help="Also run the forward-auth listener (server.authz_listen; off by default).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    metavar="N",
    help="Processes serving the same listeners (server.workers, default 1).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    listen: str | None,
    admin_listen: str | None,
    upstream: str | None,
    authz_listen: str | None,
    workers: int | None,
) -> None:
    """Run the proxy and the admin listeners (and the forward-auth one, if configured)."""
    server_overrides = {
        name: value
        for name, value in (
            ("listen", listen),
            ("admin_listen", admin_listen),
            ("authz_listen", authz_listen),
            ("workers", workers),
        )
        if value is not None
    }
    overrides: dict[str, dict[str, Any]] = {}
    if server_overrides:
        overrides["server"] = server_overrides
    if upstream is not None:
        overrides["upstream"] = {"url": upstream}
    settings = _settings(ctx, **overrides)
    _run_server("serve", lambda server: server.serve(settings))


@cli.command()
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Forward-auth listener (default: server.authz_listen, else 127.0.0.1:8002).",
)
@click.option(
    "--admin-listen",
    metavar="HOST:PORT",
    help="Also run the admin listener here (admin API, dashboard, /metrics, /healthz); "
    "off unless given.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    metavar="N",
    help="Processes serving the listener (server.workers, default 1).",
)
@click.pass_context
def authz(
    ctx: click.Context, listen: str | None, admin_listen: str | None, workers: int | None
) -> None:
    """Run only the forward-auth listener: the key checks for nginx, Traefik, Caddy, Envoy.

    The front proxy asks it about every request and forwards the request itself (no
    upstream needed). Its address must be in server.trusted_proxies. See the README's
    "Forward auth" section and config/nginx.conf, Caddyfile, envoy.yaml, traefik.yml.
    """
    settings = _settings(ctx)
    if listen is None:
        listen = settings.server.authz_listen or "127.0.0.1:8002"
    server_overrides: dict[str, Any] = {"authz_listen": listen}
    if workers is not None:
        server_overrides["workers"] = workers
    if admin_listen is not None:
        server_overrides["admin_listen"] = admin_listen  # validated like the setting
    settings = _settings(ctx, server=server_overrides)
    admin = settings.server.admin_listen if admin_listen is not None else None
    _run_server("authz", lambda server: server.authz(settings, admin_listen=admin))


@cli.command()
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Proxy listener (default 127.0.0.1:8000; also $GATEWAY_SERVER__LISTEN).",
)
@click.option(
    "--admin-listen",
    metavar="HOST:PORT",
    help="Admin listener (default 127.0.0.1:8001; also $GATEWAY_SERVER__ADMIN_LISTEN).",
)
def demo(listen: str | None, admin_listen: str | None) -> None:
    """Run a built-in echo upstream behind a gateway on a temporary store, with demo keys.

    A port that is in use is an error (exit 2) naming the flag that moves it."""
    _run_server("demo", lambda server: server.demo(listen, admin_listen))


# --- keys --------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Create, inspect, change and remove API keys on the configured store."""


@keys.command("create")
@click.option("--name", required=True, help="1-100 printable characters.")
@click.option("--scope", required=True, type=click.Choice(ACCESS_LEVELS))
@click.option(
    "--site", "sites", multiple=True, metavar="ID", help="A site the key may use (repeat)."
)
@click.option("--rate-limit", metavar="LIMIT", help='e.g. "100/minute" or "10/second;5000/day".')
@click.option("--expires-at", metavar="RFC3339", help="e.g. 2030-01-31T00:00:00Z.")
@click.option("--expires-in", metavar="DURATION", help="e.g. 90d, 12h, 30m.")
@_json_option
@click.pass_context
def keys_create(
    ctx: click.Context,
    name: str,
    scope: str,
    sites: tuple[str, ...],
    rate_limit: str | None,
    expires_at: str | None,
    expires_in: str | None,
    as_json: bool,
) -> None:
    """Create a key and print its value (shown only once). Default: all sites."""
    _exclusive(expires_at=expires_at, expires_in=expires_in)
    body: dict[str, Any] = {"name": name, "scope": scope}
    if sites:
        body["sites"] = list(sites)
    if rate_limit is not None:
        body["rateLimit"] = rate_limit
    expiry = _expiry(expires_at, expires_in)
    if expiry is not None:
        body["expiresAt"] = expiry

    async def action(service: KeyService, request_id: str) -> tuple[ApiKey, str]:
        return await service.create(parse_body(KeyCreate, body), request_id=request_id)

    key, key_value = _run_with_service(ctx, as_json, action)
    _echo_key_value(key, key_value, as_json, _settings(ctx).keys.rotation_days)


@keys.command("list")
@click.option(
    "--status",
    type=click.Choice(["active", "revoked", "all"]),
    default="all",
    show_default=True,
)
@click.option("--limit", type=int, default=50, show_default=True, help="At most 200.")
@click.option("--cursor", help="nextCursor of the previous page.")
@_json_option
@click.pass_context
def keys_list(
    ctx: click.Context, status: str, limit: int, cursor: str | None, as_json: bool
) -> None:
    """List keys, newest first."""
    wanted = None if status == "all" else Status(status)

    async def action(service: KeyService, request_id: str) -> Any:
        return await service.list(wanted, limit, cursor)

    page = _run_with_service(ctx, as_json, action, reads_only=True)
    rotation_days = _settings(ctx).keys.rotation_days
    if as_json:
        _echo_json(render.key_list_body(page, rotation_days))
        return
    if not page.data:
        click.echo("No keys.")
        return
    _table(
        ["ID", "NAME", "HINT", "SCOPE", "SITES", "STATUS", "CREATED", "LAST USED"],
        [
            [
                key.id,
                key.name,
                key.hint,
                key.scope.value,
                _sites(key),
                _status(key),
                _when(key.created_at),
                _when(key.last_used_at),
            ]
            for key in page.data
        ],
    )
    if page.next_cursor:
        again = _same_options(status=(status, "all"), limit=(limit, 50))
        click.echo(f"\nMore keys: gateway keys list{again} --cursor {page.next_cursor}")


@keys.command("show")
@click.argument("key_id", metavar="ID")
@_json_option
@click.pass_context
def keys_show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show a key's configuration and its usage."""

    async def action(service: KeyService, request_id: str) -> Any:
        return await service.details(key_id)

    key, summary = _run_with_service(ctx, as_json, action, reads_only=True)
    rotation_days = _settings(ctx).keys.rotation_days
    if as_json:
        _echo_json(render.details_body(key, summary, rotation_days))
        return
    _echo_key(key, rotation_days)
    click.echo(f"\nTotal requests: {summary.total_requests}")
    busy_days = [day for day in summary.daily if day.requests or day.errors]
    if busy_days:
        click.echo("\nDaily usage (last 30 days, days with requests):")
        _table(
            ["DATE", "REQUESTS", "ERRORS"],
            [[day.date, str(day.requests), str(day.errors)] for day in busy_days],
        )
    if summary.recent:
        click.echo("\nRecent requests:")
        _table(
            ["AT", "METHOD", "PATH", "STATUS", "LATENCY MS", "SITE"],
            [
                [
                    _when(record.at),
                    record.method,
                    record.path,
                    str(record.status),
                    f"{record.latency_ms:.1f}",
                    record.site or "-",
                ]
                for record in summary.recent
            ],
        )


@keys.command("edit")
@click.argument("key_id", metavar="ID")
@click.option("--name", help="New name.")
@click.option("--scope", type=click.Choice(ACCESS_LEVELS), help="New access level.")
@click.option("--site", "sites", multiple=True, metavar="ID", help="Replace the sites (repeat).")
@click.option("--all-sites", is_flag=True, help='Allow every site (sites = ["*"]).')
@click.option("--rate-limit", metavar="LIMIT", help='e.g. "100/minute".')
@click.option("--default-rate-limit", is_flag=True, help="Use the configured default limit.")
@click.option("--expires-at", metavar="RFC3339", help="e.g. 2030-01-31T00:00:00Z.")
@click.option("--expires-in", metavar="DURATION", help="e.g. 90d, 12h, 30m.")
@click.option("--no-expiry", is_flag=True, help="The key never expires.")
@_json_option
@click.pass_context
def keys_edit(
    ctx: click.Context,
    key_id: str,
    name: str | None,
    scope: str | None,
    sites: tuple[str, ...],
    all_sites: bool,
    rate_limit: str | None,
    default_rate_limit: bool,
    expires_at: str | None,
    expires_in: str | None,
    no_expiry: bool,
    as_json: bool,
) -> None:
    """Change a key's name, scope, sites, rate limit or expiry; its value stays the same."""
    _exclusive(site=sites, all_sites=all_sites)
    _exclusive(rate_limit=rate_limit, default_rate_limit=default_rate_limit)
    _exclusive(expires_at=expires_at, expires_in=expires_in, no_expiry=no_expiry)
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if scope is not None:
        body["scope"] = scope
    if sites:
        body["sites"] = list(sites)
    if all_sites:
        body["sites"] = [ALL_SITES]
    if rate_limit is not None or default_rate_limit:
        body["rateLimit"] = rate_limit
    if expires_at is not None or expires_in is not None or no_expiry:
        body["expiresAt"] = _expiry(expires_at, expires_in)
    if not body:
        raise click.UsageError(
            "nothing to change: give at least one of --name, --scope, --site, --all-sites, "
            "--rate-limit, --default-rate-limit, --expires-at, --expires-in, --no-expiry."
        )

    async def action(service: KeyService, request_id: str) -> ApiKey:
        key = await service.edit(key_id, parse_body(KeyEdit, body), request_id=request_id)
        await _reach_gateways(service)
        return key

    key = _run_with_service(ctx, as_json, action)
    rotation_days = _settings(ctx).keys.rotation_days
    if as_json:
        _echo_json(render.key_body(key, rotation_days))
    else:
        _echo_key(key, rotation_days)


@keys.command("rotate")
@click.argument("key_id", metavar="ID")
@click.option(
    "--grace-period",
    type=int,
    default=0,
    metavar="SECONDS",
    help=f"Keep the old value working this long (0-{MAX_GRACE_SECONDS}; default 0).",
)
@_yes_option
@_json_option
@click.pass_context
def keys_rotate(
    ctx: click.Context, key_id: str, grace_period: int, yes: bool, as_json: bool
) -> None:
    """Give a key a new value (shown only once); the old value stops working."""
    _confirm_fast(yes)
    body = {"gracePeriodSeconds": grace_period}
    when = f"in {grace_period} seconds" if grace_period else "immediately"

    async def action(service: KeyService, request_id: str) -> tuple[ApiKey, str]:
        rotate = parse_body(KeyRotate, body)
        key = await service.get(key_id)
        _confirm(yes, f"Rotate {key.id} ({key.name})? Its current value stops working {when}.")
        result = await service.rotate(key_id, rotate, request_id=request_id)
        await _reach_gateways(service)
        return result

    key, key_value = _run_with_service(ctx, as_json, action)
    _echo_key_value(key, key_value, as_json, _settings(ctx).keys.rotation_days)


@keys.command("revoke")
@click.argument("key_id", metavar="ID")
@_yes_option
@_json_option
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str, yes: bool, as_json: bool) -> None:
    """Revoke a key: every request with it is refused from now on."""
    _confirm_fast(yes)

    async def action(service: KeyService, request_id: str) -> ApiKey:
        key = await service.get(key_id)
        if key.status is Status.ACTIVE:
            _confirm(yes, f"Revoke {key.id} ({key.name})? Requests with it will be refused.")
        revoked = await service.revoke(key_id, request_id=request_id)
        await _reach_gateways(service)
        return revoked

    key = _run_with_service(ctx, as_json, action)
    rotation_days = _settings(ctx).keys.rotation_days
    if as_json:
        _echo_json(render.key_body(key, rotation_days))
    else:
        _echo_key(key, rotation_days)


@keys.command("delete")
@click.argument("key_id", metavar="ID")
@_yes_option
@_json_option
@click.pass_context
def keys_delete(ctx: click.Context, key_id: str, yes: bool, as_json: bool) -> None:
    """Delete a revoked key for good (the API answers 204: --json prints nothing)."""
    _confirm_fast(yes)

    async def action(service: KeyService, request_id: str) -> None:
        key = await service.get(key_id)
        if key.status is Status.REVOKED:
            _confirm(yes, f"Delete {key.id} ({key.name}) for good, with its usage history?")
        await service.delete(key_id, request_id=request_id)
        await _reach_gateways(service)

    _run_with_service(ctx, as_json, action)
    if not as_json:
        click.echo(f"Deleted {key_id}.")


@click.command("audit")
@click.option("--key-id", metavar="ID", help="Only this key's events.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most 200.")
@click.option("--cursor", help="nextCursor of the previous page.")
@_json_option
@click.pass_context
def audit(
    ctx: click.Context, key_id: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """List audit events (create, edit, rotate, revoke, delete), newest first."""

    async def action(service: KeyService, request_id: str) -> Any:
        return await service.audit(key_id, limit, cursor)

    page = _run_with_service(ctx, as_json, action, reads_only=True)
    if as_json:
        _echo_json(render.audit_list_body(page))
        return
    if not page.data:
        click.echo("No audit events.")
        return
    _table(
        ["AT", "ACTION", "KEY", "ACTOR", "CHANGES"],
        [
            [
                _when(event.at),
                event.action,
                event.key_id,
                event.actor,
                json.dumps(event.changes, separators=(",", ":"), ensure_ascii=False),
            ]
            for event in page.data
        ],
    )
    if page.next_cursor:
        again = _same_options(key_id=(key_id, None), limit=(limit, 50))
        click.echo(f"\nMore events: gateway audit{again} --cursor {page.next_cursor}")


keys.add_command(audit)
cli.add_command(audit)


def main() -> None:
    cli(prog_name="gateway")
