"""A data version for every IO manager: when the asset sets none and its IO manager records no
``content_hash``, the materialization's data version is the hash of the stored value's canonical
JSON, equal for equal values in any process (not Python's salted ``hash()``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import flowstone as fs
from flowstone import codec

from .queue_harness import Pipeline

BODY = """
@fs.asset
def payload() -> dict:
    n = (MARKERS / "value").read_text()
    # a set: its iteration order changes with PYTHONHASHSEED, the data version does not
    return {"n": n, "tags": {"p", "q", "r", "s" + n}}

@fs.asset
def reader(payload: dict) -> int:
    return len(payload["tags"])

defs = fs.Definitions(assets=[payload, reader])
"""


def _materialize(pipeline: Pipeline, selection: str, hash_seed: str) -> None:
    code = f"import {pipeline.name} as p; p.runtime.materialize({selection!r}, with_upstream=True)"
    env = {**pipeline.env, "PYTHONHASHSEED": hash_seed}
    command = [sys.executable, "-c", code + "; p.runtime.close()"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_hash_of_the_stored_value_is_the_data_version_across_processes(tmp_path: Path, database_url: str):
    pipeline = Pipeline(tmp_path, database_url, BODY)
    try:
        pipeline.touch("value")
        (pipeline.markers / "value").write_text("1")
        _materialize(pipeline, "reader", hash_seed="1")  # payload and reader, one process
        _materialize(pipeline, "payload", hash_seed="2")  # the same value, another process
        versions = pipeline.sql(
            "SELECT data_version FROM flowstone_materializations WHERE asset = 'payload' ORDER BY id"
        )
        assert versions[0] == versions[1]
        assert versions[0][0] == codec.content_hash({"n": "1", "tags": {"p", "q", "r", "s1"}})
        rt = pipeline.runtime
        assert {r.asset: r.status for r in rt.staleness()} == {"payload": "fresh", "reader": "fresh"}
        # another value, materialized by a worker: a new data version, and reader is stale
        (pipeline.markers / "value").write_text("2")
        pipeline.start_worker(concurrency=1)
        assert rt.submit(["payload"]).wait(timeout=60).status == "succeeded", pipeline.logs()[-3000:]
        latest = pipeline.sql(
            "SELECT data_version FROM flowstone_materializations WHERE asset = 'payload' "
            "ORDER BY id DESC LIMIT 1"
        )
        assert latest[0][0] not in (None, versions[0][0])
        assert latest[0][0].startswith("sha256:")
        stale = {r.asset: (r.status, r.stale_upstreams) for r in rt.staleness()}
        assert stale["reader"] == ("stale", ("payload",))
    finally:
        pipeline.stop()


def test_content_hash_is_canonical_and_none_for_what_the_codec_does_not_encode():
    assert codec.content_hash({"a": 1, "b": [1, 2]}) == codec.content_hash({"b": [1, 2], "a": 1})
    assert codec.content_hash([1, 2]) != codec.content_hash([2, 1])
    assert codec.content_hash(1) != codec.content_hash(1.0) != codec.content_hash("1")
    assert codec.content_hash(b"\x00") != codec.content_hash("\x00")
    assert codec.content_hash(object()) is None


@fs.asset
def told(context: fs.AssetContext) -> int:
    context.add_metadata(data_version="mine")
    return 1


@fs.asset
def untold() -> int:
    return 1


def test_a_data_version_the_asset_sets_wins_over_the_hash():
    with fs.FlowStone(fs.Definitions(assets=[told, untold]), store="memory") as rt:
        rt.materialize(["told", "untold"])
        assert rt.latest("told").metadata == {"data_version": "mine"}
        assert rt.latest("untold").metadata == {"content_hash": codec.content_hash(1)}
