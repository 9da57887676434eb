"""The web UI over HTTP (uvicorn in a thread, an httpx client) against real Postgres: every page and its JSON,
the actions (approve, reject, cancel, retry, materialize, pause), CSRF and origin checks, the
approvers list, escaping of hostile text, and the definitions read from the snapshot."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

import flowstone as fs
from flowstone.ui import security
from tests.integration import ui_harness
from tests.integration.queue_harness import Pipeline
from tests.integration.ui_harness import HOSTILE, IMG, SCRIPT, LiveServer

pipeline = ui_harness.pipeline  # the fixtures, by name
live = ui_harness.live


@pytest.fixture
def ui(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def _token(client: httpx.Client) -> str:
    page = client.get("/approvals")
    assert page.status_code == 200
    token = client.cookies.get(security.CSRF_COOKIE)
    assert token
    assert f'value="{token}"' in page.text or "Nothing waits" in page.text
    return token


def _post(client: httpx.Client, path: str, **form: str):
    return client.post(
        path, data={"csrf_token": _token(client), "next": "/runs", **form}, follow_redirects=False
    )


def _no_raw_payload(html: str) -> None:
    assert SCRIPT not in html
    assert "<img" not in html
    assert 'onerror="' not in html


def test_pages_and_json_read_the_snapshot_and_escape_hostile_text(pipeline: Pipeline, ui: httpx.Client):
    rt = pipeline.runtime
    rt.materialize("source")
    rt.materialize("doubled")
    rt.materialize("broken", with_upstream=False, raise_on_error=False)
    rt.materialize("regional", HOSTILE)
    rt.materialize("daily", "2020-02-29")

    assets = ui.get("/api/assets").json()
    by_name = {a["name"]: a for a in assets["assets"]}
    assert by_name["source"]["status"] == "succeeded"
    assert by_name["broken"]["status"] == "failed"
    assert by_name["after_gate"]["status"] == "missing"
    assert by_name["doubled"]["box"]["x"] > by_name["source"]["box"]["x"]  # left to right
    assert {"from": "source", "to": "doubled"} in [{k: e[k] for k in ("from", "to")} for e in assets["edges"]]
    filtered = ui.get("/api/assets", params={"group": "core"}).json()
    assert sorted(a["name"] for a in filtered["assets"] if a["matches"]) == ["doubled", "source"]
    searched = ui.get("/api/assets", params={"q": "gat"}).json()["assets"]
    assert sorted(a["name"] for a in searched if a["matches"]) == ["after_gate", "gate"]

    source = ui.get("/api/assets/source").json()
    assert source["latest"]["metadata"]["note"] == HOSTILE
    assert source["downstream"] == ["broken", "doubled", "gate"]
    assert [n["asset"] for n in source["lineage"]["downstream"]] == ["doubled"]  # what succeeded reading it
    regional = ui.get("/api/assets/regional").json()
    assert [(c["label"], c["state"]) for c in regional["grid"]["chips"]] == [
        ("eu", "missing"),
        (HOSTILE, "succeeded"),
    ]

    runs = ui.get("/api/runs").json()["runs"]
    failed = next(r for r in runs if r["status"] == "failed")
    run = ui.get(f"/api/runs/{failed['run_id']}").json()
    assert run["errors"][0]["message"].endswith(HOSTILE)
    assert "ValueError" in run["errors"][0]["traceback"]
    assert run["gantt"]["bars"]
    assert [(line["asset"], line["stream"], line["message"]) for line in run["logs"]] == [
        ("broken", "stdout", "checking the input " + HOSTILE)
    ]
    assert ui.get("/api/runs", params={"status": "failed"}).json()["runs"] == [failed]

    for path in [
        "/assets",
        "/assets/source",
        "/assets/regional",
        "/assets/regional?partition=" + HOSTILE,
        "/assets/daily",
        f"/runs/{failed['run_id']}",
        "/runs",
        "/approvals",
        "/automation",
    ]:
        page = ui.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert "script-src 'self'" in page.headers["content-security-policy"]
        _no_raw_payload(page.text)
    assert "&lt;script&gt;" in ui.get("/assets/source").text  # shown, escaped
    assert (
        re.search(
            r"<script[^>]*>",
            ui.get("/runs").text.replace('<script src="/static/ui.js" defer>', ""),
        )
        is None
    )


def test_approve_and_reject_need_a_csrf_token_and_respect_approvers(pipeline: Pipeline, ui: httpx.Client):
    rt = pipeline.runtime
    rt.materialize("gate", with_upstream=True, raise_on_error=False)
    rt.materialize("guarded", raise_on_error=False)
    inbox = ui.get("/api/approvals").json()
    gate = next(a for a in inbox["pending"] if a["asset"] == "gate")
    guarded = next(a for a in inbox["pending"] if a["asset"] == "guarded")
    assert gate["context_data"] == {"why": HOSTILE}
    page = ui.get("/approvals").text
    _no_raw_payload(page)
    assert f'id="approval-{gate["id"]}"' in page

    # no token, a wrong token, a foreign origin: refused, nothing decided
    assert ui.post(f"/api/approvals/{gate['id']}/approve", data={"reason": "ok"}).status_code == 403
    assert ui.post(f"/api/approvals/{gate['id']}/approve", data={"csrf_token": "x" * 43}).status_code == 403
    foreign = ui.post(
        f"/api/approvals/{gate['id']}/approve",
        data={"csrf_token": _token(ui)},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    assert rt.approvals.get(gate["id"]).status == "pending"

    done = _post(ui, f"/api/approvals/{gate['id']}/approve", reason="looks " + IMG)
    assert done.status_code == 303
    assert done.headers["location"] == "/runs"
    decided = rt.approvals.get(gate["id"])
    assert (decided.status, decided.decided_by, decided.reason) == ("approved", "alice", "looks " + IMG)

    again = ui.post(
        f"/api/approvals/{gate['id']}/reject",
        data={"csrf_token": _token(ui)},
        headers={"X-CSRF-Token": _token(ui), "Accept": "application/json"},
    )
    assert again.status_code == 409
    assert again.json()["error"] == "ApprovalAlreadyDecidedError"

    refused = ui.post(
        f"/api/approvals/{guarded['id']}/reject",
        headers={"X-CSRF-Token": _token(ui), "Accept": "application/json"},
    )
    assert refused.status_code == 403
    assert rt.approvals.get(guarded["id"]).status == "pending"
    assert any(e.event == "approval.refused" and e.actor == "alice" for e in rt.audit.events())

    rt.materialize("gate", with_upstream=True, raise_on_error=False)  # a second request, decided later
    second = next(a for a in rt.approvals.list() if a.asset == "gate")
    rt.approvals.reject(second.id, by="dave", reason="later")
    decided = ui.get("/api/approvals").json()["decided"]
    assert [(a["id"], a["decided_by"]) for a in decided] == [(second.id, "dave"), (gate["id"], "alice")]
    decided_page = ui.get("/approvals").text
    _no_raw_payload(decided_page)
    assert "alice" in decided_page


def test_cancel_retry_materialize_and_pause_from_the_ui(pipeline: Pipeline, ui: httpx.Client):
    rt = pipeline.runtime
    handle = rt.submit("doubled", with_upstream=True)  # no worker: it stays queued
    assert ui.get(f"/api/runs/{handle.run_id}").json()["can_cancel"] is True
    assert _post(ui, f"/api/runs/{handle.run_id}/cancel").status_code == 303
    run = ui.get(f"/api/runs/{handle.run_id}").json()
    assert run["run"]["status"] == "cancelled"
    assert run["can_retry"] is True
    assert {s["status"] for s in run["steps"]} == {"cancelled"}
    assert any(
        e.event == "run.cancelled" or "cancel" in e.event for e in rt.audit.events(run_id=handle.run_id)
    )

    assert _post(ui, f"/api/runs/{handle.run_id}/retry").status_code == 303
    assert ui.get(f"/api/runs/{handle.run_id}").json()["run"]["status"] not in ("cancelled", "failed")

    made = ui.post(
        "/api/assets/daily/materialize",
        data={"start": "2020-01-01", "end": "2020-01-10"},
        headers={"X-CSRF-Token": _token(ui), "Accept": "application/json"},
    )
    assert made.status_code == 200, made.text
    backfill = ui.get(f"/api/runs/{made.json()['run_id']}").json()
    assert len(backfill["steps"]) == 10
    assert backfill["run"]["requested_by"] == "alice"
    grid = ui.get("/api/assets/daily").json()["grid"]
    assert grid["total"] == 3653
    assert grid["counts"]["running"] == 10
    assert [y["year"] for y in grid["years"]] == list(range(2015, 2025))
    limited = ui.get(f"/api/runs/{made.json()['run_id']}", params={"limit": 3}).json()
    assert (len(limited["steps"]), limited["steps_total"]) == (3, 10)

    several = ui.post(
        "/api/assets/regional/materialize",
        data={"partitions": f"eu\n{HOSTILE}\n"},
        headers={"X-CSRF-Token": _token(ui), "Accept": "application/json"},
    )
    assert several.status_code == 200, several.text
    chosen = ui.get(f"/api/runs/{several.json()['run_id']}").json()["steps"]
    assert sorted(s["partition"] for s in chosen) == sorted(["eu", HOSTILE])
    one = _post(ui, "/api/assets/source/materialize")
    assert one.status_code == 303
    missing = ui.post(
        "/api/assets/daily/materialize", headers={"X-CSRF-Token": _token(ui), "Accept": "application/json"}
    )
    assert missing.status_code == 400

    assert _post(ui, "/api/schedules/nightly/pause").status_code == 303
    assert ui.get("/api/automation").json()["schedules"][0]["paused"] is True
    assert ui.get("/api/runs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert ui.get("/api/assets/nope").status_code == 404
    assert _post(ui, "/api/schedules/nightly/explode").status_code == 404


def test_behind_a_proxy_the_header_names_the_user_only_from_the_trusted_address(pipeline: Pipeline):
    from flowstone.ui import app as app_mod  # noqa: PLC0415

    pipeline.runtime.materialize("guarded", raise_on_error=False)
    approval = pipeline.runtime.approvals.list()[0]
    rt = fs.FlowStone.from_database(database_url=pipeline.database_url)
    trusted = security.Auth("nobody", "X-Forwarded-User", frozenset({"127.0.0.1"}))
    elsewhere = security.Auth("nobody", "X-Forwarded-User", frozenset({"192.0.2.1"}))
    servers = [LiveServer(app_mod.create_app(rt, trusted)), LiveServer(app_mod.create_app(rt, elsewhere))]
    try:
        with httpx.Client(base_url=servers[0].url) as client:
            assert client.get("/api/approvals").status_code == 401
            page = client.get("/approvals", headers={"X-Forwarded-User": "carol"})
            assert page.status_code == 200
            assert '<span class="user">carol</span>' in page.text
            token = client.cookies[security.CSRF_COOKIE]
            done = client.post(
                f"/api/approvals/{approval.id}/approve",
                headers={"X-Forwarded-User": "carol", "X-CSRF-Token": token, "Accept": "application/json"},
            )
            assert done.status_code == 200, done.text
            assert done.json()["decided_by"] == "carol"  # the approvers list names carol
            queued = pipeline.runtime.submit("doubled", with_upstream=True)  # no worker: it waits
            cancelled = client.post(
                f"/api/runs/{queued.run_id}/cancel",
                headers={"X-Forwarded-User": "carol", "X-CSRF-Token": token, "Accept": "application/json"},
            )
            assert cancelled.status_code == 200, cancelled.text
            made = client.post(
                "/api/assets/source/materialize",
                headers={"X-Forwarded-User": "carol", "X-CSRF-Token": token, "Accept": "application/json"},
            )
            assert pipeline.runtime.run(made.json()["run_id"]).run().requested_by == "carol"
        actors = {e.actor for e in pipeline.runtime.audit.events(run_id=queued.run_id) if "cancel" in e.event}
        assert actors == {"carol"}  # the audit log names the authenticated user
        with httpx.Client(base_url=servers[1].url) as client:
            forged = client.get("/api/runs", headers={"X-Forwarded-User": "carol"})
            assert forged.status_code == 403
    finally:
        for server in servers:
            server.stop()
        rt.close()


def test_partition_states_newest_step_wins_and_another_code_version_is_stale(pipeline: Pipeline):
    import dataclasses  # noqa: PLC0415
    from datetime import date  # noqa: PLC0415

    from flowstone.ui import views  # noqa: PLC0415

    rt = pipeline.runtime
    rt.materialize("daily", date(2020, 1, 1))
    rt.materialize("daily", date(2020, 1, 2))
    rt.submit("daily", [date(2020, 1, 2)])  # newer and in flight (no worker)
    states = {s.partition_key: s for s in rt.store.reports.partition_states("daily")}
    assert sorted(states) == ["d:2020-01-01", "d:2020-01-02"]
    definition = rt.defs.get("daily")
    assert views.partition_state(states["d:2020-01-01"], definition) == "succeeded"
    assert views.partition_state(states["d:2020-01-02"], definition) == "running"
    assert states["d:2020-01-02"].last_success_at is not None
    changed = dataclasses.replace(definition, code_version="3")
    assert views.partition_state(states["d:2020-01-01"], changed) == "stale"


def test_flowstone_ui_serves_the_published_definitions_without_the_code(pipeline: Pipeline):
    import socket  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tests.integration.queue_harness import eventually  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in pipeline.env.items() if k != "PYTHONPATH"}  # the pipeline is not importable
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowstone.cli", "ui", "--port", str(port)],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/assets", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        eventually(answers, timeout=30, what="flowstone ui to answer")
        names = [a["name"] for a in httpx.get(f"http://127.0.0.1:{port}/api/assets").json()["assets"]]
        assert "daily" in names
        assert "gate" in names
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}" in err


def test_with_a_users_file_the_browser_signs_in_and_the_user_decides(pipeline: Pipeline, tmp_path):
    from flowstone.ui import app as app_mod  # noqa: PLC0415

    pipeline.runtime.materialize("guarded", raise_on_error=False)
    approval = pipeline.runtime.approvals.list()[0]
    users = tmp_path / "users"
    users.write_text(f"carol:{security.hash_password('pw-carol')}\nbob:{security.hash_password('pw-bob')}\n")
    rt = fs.FlowStone.from_database(database_url=pipeline.database_url)
    auth = security.Auth.for_host(
        "127.0.0.1", local_actor="nobody", trust_header=None, trusted_proxies=[], users_file=users
    )
    server = LiveServer(app_mod.create_app(rt, auth))
    try:
        with httpx.Client(base_url=server.url) as anonymous:
            asked = anonymous.get("/approvals")
            assert asked.status_code == 401
            assert asked.headers["www-authenticate"].startswith("Basic ")
            assert anonymous.post(f"/api/approvals/{approval.id}/approve").status_code == 401  # who, first
        with httpx.Client(base_url=server.url, auth=("carol", "wrong")) as wrong:
            assert wrong.get("/api/runs").status_code == 401
        with httpx.Client(base_url=server.url, auth=("bob", "pw-bob")) as bob:
            token = (bob.get("/approvals"), bob.cookies[security.CSRF_COOKIE])[1]
            refused = bob.post(
                f"/api/approvals/{approval.id}/approve",
                headers={"X-CSRF-Token": token, "Accept": "application/json"},
            )
            assert refused.status_code == 403  # only carol may decide
        with httpx.Client(base_url=server.url, auth=("carol", "pw-carol")) as carol:
            token = (carol.get("/approvals"), carol.cookies[security.CSRF_COOKIE])[1]
            done = carol.post(
                f"/api/approvals/{approval.id}/approve",
                headers={"X-CSRF-Token": token, "Accept": "application/json"},
            )
            assert done.status_code == 200, done.text
            assert done.json()["decided_by"] == "carol"
    finally:
        server.stop()
        rt.close()


def test_the_ui_follows_newly_published_definitions(pipeline: Pipeline):
    from flowstone.ui import app as app_mod  # noqa: PLC0415

    rt = fs.FlowStone.from_database(database_url=pipeline.database_url)
    server = LiveServer(app_mod.create_app(rt, refresh_s=0))
    try:
        with httpx.Client(base_url=server.url) as client:
            assert "extra" not in [a["name"] for a in client.get("/api/assets").json()["assets"]]

            @fs.asset
            def extra(source: int) -> int:
                return source

            deployed = fs.Definitions(assets=[*pipeline.runtime.defs.assets.values(), extra])
            fs.FlowStone(deployed, database_url=pipeline.database_url).close()  # publishes them
            names = [a["name"] for a in client.get("/api/assets").json()["assets"]]
            assert "extra" in names
            assert client.get("/api/assets/extra").json()["deps"] == ["source"]
    finally:
        server.stop()
        rt.close()


DYNAMIC_BODY = """
TENANTS = fs.DynamicPartitions("tenants")
DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-02")

@fs.asset(partitions=TENANTS)
def per_tenant(context: fs.AssetContext) -> str:
    return str(context.partition)

@fs.asset(partitions=fs.MultiPartitions({"day": DAYS, "tenant": TENANTS}))
def tenant_days(context: fs.AssetContext) -> str:
    return str(context.partition)

defs = fs.Definitions(assets=[per_tenant, tenant_days])
"""


def test_the_partition_grid_shows_dynamic_partitions_alone_and_in_multi_partitions(
    tmp_path, database_url: str
):
    from datetime import date  # noqa: PLC0415

    from flowstone.ui import app as app_mod  # noqa: PLC0415

    pipeline = Pipeline(tmp_path, database_url, DYNAMIC_BODY)
    rt = pipeline.runtime
    rt.partitions.add("tenants", ["acme", "globex"])
    rt.materialize("per_tenant", "acme")
    rt.materialize("tenant_days", (date(2025, 1, 2), "globex"))
    ui_rt = fs.FlowStone.from_database(database_url=database_url, actor="alice")  # the snapshot only
    server = LiveServer(app_mod.create_app(ui_rt))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as ui:

            def chips(asset: str) -> list[tuple[str, str]]:
                grid = ui.get(f"/api/assets/{asset}").json()["grid"]
                return [(c["label"], c["state"]) for c in grid["chips"]]

            assert chips("per_tenant") == [("acme", "succeeded"), ("globex", "missing")]
            assert chips("tenant_days") == [
                ("2025-01-01|acme", "missing"),
                ("2025-01-01|globex", "missing"),
                ("2025-01-02|acme", "missing"),
                ("2025-01-02|globex", "succeeded"),
            ]
            # keys added and removed show at once (the grid of dynamic keys is never cached)
            rt.partitions.add("tenants", ["initech"])
            rt.partitions.remove("tenants", ["acme"])
            assert chips("per_tenant") == [("globex", "missing"), ("initech", "missing")]
            assert [label for label, _ in chips("tenant_days")] == [
                "2025-01-01|globex",
                "2025-01-01|initech",
                "2025-01-02|globex",
                "2025-01-02|initech",
            ]
            grid = ui.get("/api/assets/per_tenant").json()["grid"]
            assert grid["other_keys"] == [{"key": "s:acme", "label": "acme", "state": "succeeded"}]
            page = ui.get("/assets/tenant_days")
            assert page.status_code == 200
            assert "initech" in page.text
    finally:
        server.stop()
        ui_rt.close()
        pipeline.stop()
