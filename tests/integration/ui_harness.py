"""The UI's tests (real Postgres, from tests/integration/conftest.py) use a pipeline whose assets carry
hostile text in every place a person can put some: metadata, approval messages and context data,
partition keys, error messages."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowstone as fs
from tests.integration.queue_harness import Pipeline

__all__ = ["HOSTILE", "IMG", "SCRIPT", "LiveServer", "live", "pipeline"]

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '"><img src=x onerror="window.__pwned=2">'
HOSTILE = SCRIPT + IMG

BODY = f"""
from datetime import timedelta

HOSTILE = {HOSTILE!r}

@fs.asset(description="the source " + HOSTILE, group="core")
def source(context: fs.AssetContext) -> int:
    context.add_metadata(note=HOSTILE, rows=3)
    return 1

@fs.asset(group="core")
def doubled(source: int) -> int:
    return source * 2

@fs.asset
def broken(source: int) -> int:
    print("checking the input " + HOSTILE)  # a step log line the run page shows (escaped)
    if not (MARKERS / "fixed").exists():
        raise ValueError("bad input " + HOSTILE)
    return source

@fs.asset
def gate(context: fs.AssetContext, source: int) -> int:
    context.require_approval(
        "ship it? " + HOSTILE, timeout=timedelta(hours=1), context_data={{"why": HOSTILE}}
    )
    return source

@fs.asset
def after_gate(gate: int) -> int:
    return gate + 1

@fs.asset
def guarded(context: fs.AssetContext) -> int:
    context.require_approval("only carol", approvers=["carol"])
    return 1

@fs.asset(partitions=fs.StaticPartitions(["eu", HOSTILE]))
def regional(context: fs.AssetContext) -> str:
    return str(context.partition)

DAYS = fs.DailyPartitions(start="2015-01-01", end="2024-12-31")

@fs.asset(partitions=DAYS, code_version="2")
def daily(context: fs.AssetContext) -> str:
    return str(context.partition)

nightly = fs.Schedule("nightly", "doubled", cron="0 3 * * *")

defs = fs.Definitions(
    assets=[source, doubled, broken, gate, after_gate, guarded, regional, daily],
    schedules=[nightly],
)
"""


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    with Pipeline(tmp_path, database_url, BODY) as p:
        yield p


class LiveServer:
    """The UI served by uvicorn in a thread of the test process, on a free loopback port."""

    def __init__(self, app: object) -> None:
        import uvicorn  # noqa: PLC0415

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live(pipeline: Pipeline) -> Iterator[LiveServer]:
    """The UI for the pipeline's database, read from the snapshot, acting as ``alice``."""
    from flowstone.ui import app as app_mod  # noqa: PLC0415

    rt = fs.FlowStone.from_database(database_url=pipeline.database_url, actor="alice")
    server = LiveServer(app_mod.create_app(rt))
    try:
        yield server
    finally:
        server.stop()
        rt.close()
