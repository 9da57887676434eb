"""Schema migrations: ordered, append-only, checksummed, one transaction each, one migrator at a time.

``upgrade(url)``:

1. takes a session-level ``pg_advisory_lock`` so two concurrent upgrades never interleave (the second
   waits, then finds nothing to do);
2. installs Procrastinate's schema on a database that has none (and records the version it
   installed), or applies Procrastinate's own migration files when the installed package is newer
   than the recorded schema;
3. checks that every applied FlowStone migration still has its file with the same checksum (an edited
   applied migration is an error naming the file: add a new migration instead);
4. applies the missing ``sql/migrations/NNNN_<what>.sql`` files in order, each in its own transaction
   together with its row in ``flowstone_schema_migrations``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from procrastinate import schema as procrastinate_schema

from flowstone import errors
from flowstone.store import pg, sqlfiles

__all__ = ["LOCK_KEY", "Migration", "UpgradeReport", "discover", "status", "upgrade"]

# pg_advisory_lock key: the bytes of "FlowMigr" as a signed bigint. Fixed forever: changing it would
# let an old and a new FlowStone migrate at the same time.
LOCK_KEY = int.from_bytes(b"FlowMigr", "big", signed=True)

_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_PROCRASTINATE_FILE_RE = re.compile(r"^(?P<version>\d+\.\d+\.\d+)_(?P<seq>\d+)_(pre|post)_.*\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path
    sql: str

    @property
    def filename(self) -> str:
        """The file's name, e.g. ``0001_core.sql``."""
        return self.path.name

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass
class UpgradeReport:
    """What one ``upgrade`` did."""

    applied: list[str] = field(default_factory=list)
    procrastinate: str | None = None

    @property
    def nothing_to_do(self) -> bool:
        """True when the database was already up to date."""
        return not self.applied and self.procrastinate is None


def discover(files: Iterable[Path] | None = None) -> list[Migration]:
    """Read and validate the migration files: names, no duplicates, no gaps, starting at 0001."""
    paths = list(sqlfiles.migration_files() if files is None else files)
    migrations: dict[int, Migration] = {}
    for path in paths:
        match = _FILE_RE.match(path.name)
        if not match:
            raise errors.MigrationError(
                f"migration file {path.name!r} is not named NNNN_<what>.sql (lowercase, digits, _)"
            )
        version = int(match.group("version"))
        if version in migrations:
            raise errors.MigrationError(
                f"two migrations have version {version:04d}: {migrations[version].filename} and {path.name}"
            )
        migrations[version] = Migration(
            version=version,
            name=match.group("name"),
            path=path,
            sql=path.read_text(encoding="utf-8"),
        )
    ordered = [migrations[v] for v in sorted(migrations)]
    for expected, migration in enumerate(ordered, start=1):
        if migration.version != expected:
            raise errors.MigrationError(
                f"migration {expected:04d} is missing: found {migration.filename} after "
                f"{expected - 1:04d}; migrations must be numbered without gaps"
            )
    return ordered


def _procrastinate_version() -> str:
    return importlib.metadata.version("procrastinate")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def procrastinate_migrations_between(old: str, new: str, directory: Path) -> list[Path]:
    """Procrastinate's migration files shipped after version ``old`` up to ``new``, in order."""
    selected: list[tuple[tuple[int, ...], int, Path]] = []
    for path in directory.glob("*.sql"):
        match = _PROCRASTINATE_FILE_RE.match(path.name)
        if not match:
            continue
        version = _version_tuple(match.group("version"))
        if _version_tuple(old) < version <= _version_tuple(new):
            selected.append((version, int(match.group("seq")), path))
    return [path for _, _, path in sorted(selected)]


Progress = Callable[[str], None]


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise errors.StoreError(
            f"cannot connect to the database: {str(exc).strip()}", context={"url": _redact(url)}
        ) from exc


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


Q = sqlfiles.query


def _record(
    conn: psycopg.Connection[tuple[object, ...]], component: str, version: str, name: str, text: str
) -> None:
    conn.execute(
        Q("schema_migrations_insert"),
        {
            "component": component,
            "version": version,
            "name": name,
            "checksum": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        },
    )


def _ignore(_: str) -> None:
    return None


def _install_procrastinate(conn: psycopg.Connection[tuple[object, ...]], say: Progress) -> str | None:
    """Install or update Procrastinate's schema; returns what was done, or None."""
    installed = _procrastinate_version()
    row = conn.execute(Q("schema_migrations_procrastinate_version")).fetchone()
    recorded = str(row[0]) if row else None
    has_schema = conn.execute(Q("schema_procrastinate_present")).fetchone()
    if recorded is None:
        schema_sql = procrastinate_schema.SchemaManager.get_schema()
        with conn.transaction():
            if has_schema and has_schema[0]:
                # Installed by someone else (e.g. `procrastinate schema --apply`): adopt it as is.
                action = f"procrastinate schema found, recorded as {installed}"
            else:
                conn.execute(schema_sql)
                action = f"procrastinate schema {installed} installed"
            _record(conn, "procrastinate", installed, "schema.sql", schema_sql)
        say(action)
        return action
    if _version_tuple(recorded) >= _version_tuple(installed):
        return None
    directory = Path(procrastinate_schema.SchemaManager.get_migrations_path())
    files = procrastinate_migrations_between(recorded, installed, directory)
    with conn.transaction():
        for path in files:
            say(f"applying procrastinate migration {path.name}")
            # A trusted file shipped inside the procrastinate package.
            text = path.read_text(encoding="utf-8")
            conn.execute(text)
            _record(conn, "procrastinate", installed, path.name, text)
    action = f"procrastinate schema upgraded from {recorded} to {installed}"
    say(action)
    return action


def _check_applied(applied: dict[int, tuple[str, str]], migrations: list[Migration]) -> list[Migration]:
    """Verify applied migrations against the files; return the ones still to apply."""
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise errors.MigrationError(
                f"the database has migration {version:04d}_{name}.sql applied, which this FlowStone "
                f"does not know (it knows up to {len(migrations):04d}): upgrade FlowStone"
            )
        if migration.checksum != checksum or migration.name != name:
            raise errors.MigrationError(
                f"migration {migration.filename} was changed after it was applied (checksum "
                f"differs). Applied migrations are append-only: restore the file and add a new "
                f"migration instead",
                context={"file": str(migration.path)},
            )
    return [m for m in migrations if m.version not in applied]


def upgrade(
    url: str,
    *,
    migrations: list[Migration] | None = None,
    progress: Progress | None = None,
) -> UpgradeReport:
    """Bring the database at ``url`` up to date. Safe to run concurrently and repeatedly."""
    say = progress or _ignore
    todo_migrations = discover() if migrations is None else migrations
    report = UpgradeReport()
    with _connect(url) as conn:
        # Session-level lock: held across the per-migration transactions below.
        conn.execute(Q("schema_advisory_lock"), {"key": LOCK_KEY})
        try:
            conn.execute(Q("schema_migrations_create"))
            report.procrastinate = _install_procrastinate(conn, say)
            rows = conn.execute(Q("schema_migrations_applied"), {"component": "flowstone"}).fetchall()
            applied = {int(str(v)): (str(n), str(c)) for v, n, c in rows}
            for migration in _check_applied(applied, todo_migrations):
                say(f"applying {migration.filename}")
                with conn.transaction():
                    # Our own migration file, shipped inside the package.
                    conn.execute(migration.sql)
                    _record(conn, "flowstone", f"{migration.version:04d}", migration.name, migration.sql)
                report.applied.append(migration.filename)
        finally:
            conn.execute(Q("schema_advisory_unlock"), {"key": LOCK_KEY})
    return report


def status(url: str) -> dict[str, list[str]]:
    """Applied migrations by component (``{"flowstone": [...], "procrastinate": [...]}``). Driver
    errors become :class:`~flowstone.errors.StoreError` (retryable when transient)."""
    with _connect(url) as conn, pg.translate_errors("read the applied migrations"):
        exists = conn.execute(Q("schema_migrations_exists")).fetchone()
        if not exists or not exists[0]:
            return {"flowstone": [], "procrastinate": []}
        rows = conn.execute(Q("schema_migrations_all")).fetchall()
    result: dict[str, list[str]] = {"flowstone": [], "procrastinate": []}
    for component, version, name, _applied_at in rows:
        result[str(component)].append(f"{version} {name}")
    return result


def pending(url: str) -> list[str]:
    """File names of FlowStone migrations not yet applied (everything, on an empty database)."""
    applied = {line.split(" ", 1)[0] for line in status(url)["flowstone"]}
    return [m.filename for m in discover() if f"{m.version:04d}" not in applied]
