"""Start the UI: open the database from its definitions snapshot and serve the app with uvicorn."""

from __future__ import annotations

from flowstone import runtime as runtime_mod
from flowstone.ui import security

__all__ = ["serve"]


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    database_url: str | None = None,
    trust_header: str | None = None,
    trusted_proxies: list[str] | None = None,
    users_file: str | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the UI until interrupted. Bound to anything but loopback it needs ``users_file``, or
    ``trust_header`` (the authenticating proxy's user header) and ``trusted_proxies``."""
    rt = runtime_mod.FlowStone.from_database(database_url=database_url)
    auth = security.Auth.for_host(
        host,
        local_actor=rt.actor,
        trust_header=trust_header,
        trusted_proxies=trusted_proxies or [],
        users_file=users_file,
    )
    import uvicorn  # noqa: PLC0415 - the `ui` extra

    from flowstone.ui import app  # noqa: PLC0415 - starlette, the `ui` extra

    try:
        uvicorn.run(app.create_app(rt, auth), host=host, port=port, log_level=log_level, access_log=False)
    finally:
        rt.close()
