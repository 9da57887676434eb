"""The web UI as a Starlette (ASGI) app: server-rendered pages (Jinja2, autoescaped) and the same
data as JSON under ``/api/...``; state-changing requests are POSTs with a CSRF token.

Pages: ``/assets``, ``/assets/{name}``, ``/runs``, ``/runs/{run_id}``, ``/approvals``,
``/automation``; each has ``/api/...`` with the same path. Actions (POST, form or JSON):
``/api/approvals/{id}/approve|reject``, ``/api/runs/{run_id}/cancel|retry``,
``/api/assets/{name}/materialize``, ``/api/schedules/{name}/pause|resume``.

Database calls block, so every handler runs them in Starlette's thread pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flowstone import errors, results, snapshot
from flowstone import runtime as runtime_mod
from flowstone import services as services_mod
from flowstone.queue import client
from flowstone.ui import security, views, views_ops

__all__ = ["create_app"]

HERE = Path(__file__).parent
LIVE_MS = 3000
"""How often a live page fetches its content again."""
REFRESH_S = 10.0
"""How often (at most) a request checks whether new definitions were published."""

STATUS_OF: dict[type[errors.FlowStoneError], int] = {
    errors.UnknownAssetError: 404,
    errors.ApprovalNotFoundError: 404,
    errors.UnknownScheduleError: 404,
    errors.NotAllowedError: 403,
    errors.ApprovalAlreadyDecidedError: 409,
    errors.InvalidPartitionError: 400,
}

Handler = Callable[[Request], Awaitable[Response]]


def _status(exc: errors.FlowStoneError) -> int:
    if isinstance(exc, security.AuthError):
        return exc.status
    for cls, status in STATUS_OF.items():
        if isinstance(exc, cls):
            return status
    if "does not exist" in exc.message:
        return 404
    return 400


class UI:
    """The app's state: the runtime (definitions from the snapshot), auth, templates.

    A deploy publishes new definitions while the UI runs: at most every ``refresh_s`` seconds a
    request reads the snapshot's hash, and a new one gets a new runtime for it (the previous one,
    if the UI made it, is closed a minute later, after the requests that hold it)."""

    def __init__(
        self, rt: runtime_mod.FlowStone, auth: security.Auth, *, refresh_s: float = REFRESH_S
    ) -> None:
        self.rt = rt
        self.auth = auth
        self.refresh_s = refresh_s
        published = views.pg(rt).snapshots.read()
        self._hash = published.hash if published is not None else None
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.created: list[runtime_mod.FlowStone] = []
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["ts"] = _timestamp
        self.env.filters["calendar_cells"] = _calendar_cells
        self.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)

    def refresh(self) -> None:
        """Follow newly published definitions (a read of the snapshot every ``refresh_s`` at most)."""
        if time.monotonic() - self._checked < self.refresh_s:
            return
        with self._lock:
            if time.monotonic() - self._checked < self.refresh_s:
                return
            self._checked = time.monotonic()
            found = views.pg(self.rt).snapshots.read()
            if found is None or found.hash == self._hash:
                return
            old = self.rt
            self.rt = runtime_mod.FlowStone(
                snapshot.definitions_from(found.assets, found.automation),
                database_url=old.database_url,
                home=old.settings.home,
                actor=old.actor,
                publish_definitions=False,
            )
            self._hash = found.hash
            self.created.append(self.rt)
            if old in self.created:
                self.created.remove(old)
                closer = threading.Timer(60.0, old.close)
                closer.daemon = True
                closer.start()

    def close(self) -> None:
        """Close the runtimes the UI made (the caller closes the one it gave)."""
        for made in self.created:
            made.close()
        self.created.clear()

    def user(self, request: Request) -> str:
        return self.auth.user(dict(request.headers), request.client.host if request.client else None)

    def services(self, request: Request) -> services_mod.Services:
        """The runtime's services acting as the request's user (audit log, requested_by)."""
        return dataclasses.replace(self.rt.services, actor=self.user(request))

    # -- rendering ----------------------------------------------------------------------------

    def page(self, request: Request, template: str, data: dict[str, Any], *, live: bool = False) -> Response:
        """The HTML page, or with ``X-Fragment: 1`` only its ``main`` block (live updates)."""
        token = request.cookies.get(security.CSRF_COOKIE) or security.new_token()
        context = {
            "data": data,
            "csrf": token,
            "user": self.user(request),
            "path": request.url.path,
            "live_ms": LIVE_MS if live else 0,
        }
        tmpl = self.env.get_template(template)
        if request.headers.get("x-fragment") == "1":
            body = "".join(tmpl.blocks["main"](tmpl.new_context(context)))
        else:
            body = tmpl.render(context)
        response = HTMLResponse(body)
        if request.cookies.get(security.CSRF_COOKIE) != token:
            response.set_cookie(security.CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    def error(self, request: Request, exc: errors.FlowStoneError) -> Response:
        status = _status(exc)
        response: Response
        if _wants_json(request):
            response = JSONResponse({"error": exc.type, "message": exc.message}, status_code=status)
        else:
            tmpl = self.env.get_template("error.html")
            context = {"status": status, "message": exc.message, "type": exc.type, "user": "", "path": ""}
            response = HTMLResponse(tmpl.render(context), status_code=status)
        if status == 401 and self.auth.users is not None:  # the browser asks for a user and password
            response.headers["WWW-Authenticate"] = 'Basic realm="FlowStone", charset="UTF-8"'
        return response


def _limit(request: Request, default: int) -> int:
    """``?limit=N`` (a whole number of at least 1), else ``default``."""
    text = request.query_params.get("limit", "")
    return int(text) if text.isdigit() and int(text) > 0 else default


def _calendar_cells(cells: list[dict[str, Any]]) -> Markup:
    """A year's calendar cells as SVG, joined here rather than in a template loop: 3,650 days render
    in a few milliseconds instead of twenty (``Markup.format`` would take longer than the loop)."""
    text = "".join(
        f'<rect class="c-{escape(c["state"])}" x="{int(c["x"])}" y="{int(c["y"])}" '
        f'data-p="{escape(c["label"])}"/>'
        for c in cells
    )
    return Markup(text)  # noqa: S704 - every text in it went through escape(); x and y are integers


def _timestamp(iso: str | None) -> str:
    """An ISO timestamp as ``2025-01-01 10:00:00`` (the JSON keeps the full value)."""
    return "-" if not iso else iso[:19].replace("T", " ")


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") and (
        request.method == "GET"
        or "application/json" in request.headers.get("accept", "")
        or security.CSRF_HEADER in request.headers
    )


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = security.CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def create_app(
    rt: runtime_mod.FlowStone, auth: security.Auth | None = None, *, refresh_s: float = REFRESH_S
) -> Starlette:
    """The ASGI app for ``rt`` (open on the database; its definitions come from the snapshot and
    follow new ones, see :class:`UI`)."""
    ui = UI(rt, auth or security.Auth(local_actor=rt.actor), refresh_s=refresh_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            ui.close()

    def guarded(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                response = await handler(request)
            except errors.FlowStoneError as exc:
                response = ui.error(request, exc)
            return _headers(response)

        return wrapped

    def page(template: str, build: Callable[[Request], dict[str, Any]], *, live: bool = False) -> Handler:
        async def html(request: Request) -> Response:
            await run_in_threadpool(ui.user, request)  # refuse before reading (argon2 is slow once)
            await run_in_threadpool(ui.refresh)
            data = await run_in_threadpool(build, request)
            return ui.page(request, template, data, live=live)

        return guarded(html)

    def api(build: Callable[[Request], dict[str, Any]]) -> Handler:
        async def as_json(request: Request) -> Response:
            await run_in_threadpool(ui.user, request)
            await run_in_threadpool(ui.refresh)
            return JSONResponse(await run_in_threadpool(build, request))

        return guarded(as_json)

    def action(do: Callable[[UI, Request, dict[str, str]], dict[str, Any]]) -> Handler:
        async def post(request: Request) -> Response:
            await run_in_threadpool(ui.user, request)  # who first (401), then whether from our page (403)
            await _check_csrf(request)
            form = {k: str(v) for k, v in (await request.form()).items()}
            result = await run_in_threadpool(do, ui, request, form)
            if _wants_json(request):
                return JSONResponse(result)
            return RedirectResponse(_next(form.get("next")), status_code=303)

        return guarded(post)

    # -- what each route reads ----------------------------------------------------------------

    def assets(r: Request) -> dict[str, Any]:
        return views.assets_page(ui.rt, group=r.query_params.get("group"), q=r.query_params.get("q"))

    def asset(r: Request) -> dict[str, Any]:
        return views.asset_page(ui.rt, r.path_params["name"], partition=r.query_params.get("partition"))

    def runs(r: Request) -> dict[str, Any]:
        return views_ops.runs_page(ui.rt, status=r.query_params.get("status"))

    def run(r: Request) -> dict[str, Any]:
        return views_ops.run_page(ui.rt, r.path_params["run_id"], limit=_limit(r, views_ops.STEPS_MAX))

    def approvals(_: Request) -> dict[str, Any]:
        return views_ops.approvals_page(ui.rt)

    def automation(_: Request) -> dict[str, Any]:
        return views_ops.automation_page(ui.rt)

    async def home(_: Request) -> Response:
        return RedirectResponse("/assets", status_code=307)

    routes = [
        Route("/", home),
        Route("/assets", page("assets.html", assets)),
        Route("/api/assets", api(assets)),
        Route("/assets/{name}", page("asset.html", asset)),
        Route("/api/assets/{name}", api(asset)),
        Route("/runs", page("runs.html", runs, live=True)),
        Route("/api/runs", api(runs)),
        Route("/runs/{run_id}", page("run.html", run, live=True)),
        Route("/api/runs/{run_id}", api(run)),
        Route("/approvals", page("approvals.html", approvals, live=True)),
        Route("/api/approvals", api(approvals)),
        Route("/automation", page("automation.html", automation)),
        Route("/api/automation", api(automation)),
        Route("/api/approvals/{approval_id:int}/{decision:str}", action(_decide), methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", action(_cancel), methods=["POST"]),
        Route("/api/runs/{run_id}/retry", action(_retry), methods=["POST"]),
        Route("/api/assets/{name}/materialize", action(_materialize), methods=["POST"]),
        Route("/api/schedules/{name}/{verb}", action(_schedule), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


# -- what each action does (POST) ----------------------------------------------------------------


def _decide(ui: UI, r: Request, form: dict[str, str]) -> dict[str, Any]:
    approval_id = int(r.path_params["approval_id"])
    decision = _verb(r, "decision", ("approve", "reject"))
    decide_fn = ui.rt.approvals.approve if decision == "approve" else ui.rt.approvals.reject
    user = ui.user(r)
    try:
        done = decide_fn(approval_id, by=user, reason=form.get("reason") or None)
    except errors.NotAllowedError:
        # a refused decision is a fact worth keeping: who tried to decide what
        request = ui.rt.approvals.get(approval_id)
        details = {"approval_id": approval_id, "decision": decision, "from": "ui"}
        ui.rt.audit.record(
            "approval.refused", details=details, run_id=request.run_id, asset=request.asset, actor=user
        )
        raise
    return views_ops.approval_json(done)


def _cancel(ui: UI, r: Request, _: dict[str, str]) -> dict[str, Any]:
    run_id = r.path_params["run_id"]
    ui.rt.run(run_id)  # an unknown id: 404
    cancelled = client.RunHandle(ui.services(r), run_id).cancel()
    return {"run_id": run_id, "cancelled_steps": cancelled}


def _retry(ui: UI, r: Request, form: dict[str, str]) -> dict[str, Any]:
    handle = client.retry(ui.services(r), r.path_params["run_id"], from_asset=form.get("from_asset") or None)
    return {"run_id": handle.run_id}


def _materialize(ui: UI, r: Request, form: dict[str, str]) -> dict[str, Any]:
    name = r.path_params["name"]
    definition = ui.rt.defs.get(name)
    svc = ui.services(r)
    config = results.RunConfig()
    start, end = form.get("start") or None, form.get("end") or None
    if definition.partitions is not None and (start or end):
        parse = definition.partitions.parse
        values = ui.rt.backfill_partitions(
            name,
            None,
            parse(start, asset=name) if start else None,
            parse(end, asset=name) if end else None,
        )
        handle = client.backfill(
            svc, name, values, force=False, partitions_per_job=1, config=config, progress=None
        )
    elif definition.partitions is not None and form.get("partitions", "").strip():
        chosen = [line.strip() for line in form["partitions"].splitlines() if line.strip()]
        values_many = [definition.partitions.parse(text, asset=name) for text in chosen]
        handle = client.submit(
            svc, name, values_many, with_upstream=False, config=config, tags={"from": "ui"}
        )
    else:
        part = form.get("partition") or None
        values_one = (
            [definition.partitions.parse(part, asset=name)] if definition.partitions and part else None
        )
        if definition.partitions is not None and values_one is None:
            raise errors.InvalidPartitionError(
                f"asset {name!r} is partitioned: give a partition, or start and end", asset=name
            )
        handle = client.submit(svc, name, values_one, with_upstream=False, config=config, tags={"from": "ui"})
    return {"run_id": handle.run_id}


def _schedule(ui: UI, r: Request, _: dict[str, str]) -> dict[str, Any]:
    name, verb = r.path_params["name"], _verb(r, "verb", ("pause", "resume"))
    change = ui.rt.schedules.pause if verb == "pause" else ui.rt.schedules.resume
    state = change(name, by=ui.user(r))
    return {"name": state.name, "paused": state.paused}


def _verb(r: Request, param: str, allowed: tuple[str, ...]) -> str:
    verb = str(r.path_params[param])
    if verb not in allowed:
        raise errors.FlowStoneError(f"action {verb!r} does not exist: use {' or '.join(allowed)}")
    return verb


def _next(target: str | None) -> str:
    """Where a form goes back to: a path on this site only (``//host`` and URLs are refused)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


async def _check_csrf(request: Request) -> None:
    """The token matches the cookie, and a browser's Origin is ours."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise security.AuthError(f"cross-origin request from {origin} refused", status=403)
    sent = request.headers.get(security.CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(security.CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not security.same_token(sent, request.cookies.get(security.CSRF_COOKIE)):
        raise security.AuthError("missing or wrong CSRF token: reload the page and try again", status=403)
