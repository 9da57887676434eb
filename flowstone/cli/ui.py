"""``flowstone ui``: serve the web UI (needs the ``flowstone[ui]`` extra; no ``--defs``: the
definitions come from the snapshot in the database)."""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import sys

from flowstone import errors
from flowstone.cli import common


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``flowstone ui``."""
    sub = commands.add_parser(
        "ui",
        help="serve the web UI (assets, runs, approvals) on http://127.0.0.1:3000",
        description="Serve the web UI. It reads the definitions published in the database and never "
        "imports your code. Bound to anything but 127.0.0.1 it needs an authentication mode: "
        "--users-file FILE, or an authenticating proxy with --trust-header X-Forwarded-User "
        "--trusted-proxy ADDRESS.",
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sub.add_argument("--port", type=common.positive_int, default=3000, help="port (default 3000)")
    sub.add_argument("--database-url", default=None, help="Postgres URL (default: FLOWSTONE_DATABASE_URL)")
    sub.add_argument(
        "--trust-header",
        default=None,
        metavar="HEADER",
        help="take the user from this header set by an authenticating proxy (e.g. X-Forwarded-User)",
    )
    sub.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="an address allowed to set --trust-header (repeat for several)",
    )
    sub.add_argument(
        "--users-file",
        default=None,
        metavar="FILE",
        help="sign in with HTTP Basic against FILE: one name:argon2-hash per line",
    )
    sub.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (from the terminal or stdin), print its argon2 hash for the users file, exit",
    )
    sub.add_argument("--defs", default=None, help=argparse.SUPPRESS)  # accepted, unused: the snapshot is read
    sub.set_defaults(handler=_cmd_ui)


def _cmd_ui(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        raise errors.ConfigurationError("the web UI needs its extra: pip install 'flowstone[ui]'")
    from flowstone.ui import security, server  # noqa: PLC0415 - the optional extra, loaded on use

    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            raise errors.ConfigurationError("an empty password is refused")
        common.out(security.hash_password(password))
        return common.EXIT_OK
    # refuse a public address without authentication before touching the database
    security.Auth.for_host(
        args.host,
        local_actor="-",
        trust_header=args.trust_header,
        trusted_proxies=args.trusted_proxy,
        users_file=args.users_file,
    )
    common.err(f"FlowStone UI on http://{args.host}:{args.port} (Ctrl-C stops it)")
    server.serve(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        trust_header=args.trust_header,
        trusted_proxies=args.trusted_proxy,
        users_file=args.users_file,
    )
    return common.EXIT_OK
