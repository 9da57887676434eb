-- name: schema_migrations_create
-- Creates the bookkeeping table of applied migrations (the runner holds the advisory lock).
CREATE TABLE IF NOT EXISTS flowstone_schema_migrations (
    component  text NOT NULL CHECK (component IN ('flowstone', 'procrastinate')),
    version    text NOT NULL,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version, name)
);

-- name: schema_migrations_exists
-- Returns one row: whether the bookkeeping table exists.
SELECT to_regclass('flowstone_schema_migrations') IS NOT NULL AS present;

-- name: schema_migrations_applied
-- Returns (version, name, checksum) of every applied migration of one component.
SELECT version, name, checksum
FROM flowstone_schema_migrations
WHERE component = %(component)s
ORDER BY version, name;

-- name: schema_migrations_all
-- Returns (component, version, name, applied_at) of every applied migration.
SELECT component, version, name, applied_at
FROM flowstone_schema_migrations
ORDER BY component, applied_at, version, name;

-- name: schema_migrations_insert
-- Records one applied migration file.
INSERT INTO flowstone_schema_migrations (component, version, name, checksum)
VALUES (%(component)s, %(version)s, %(name)s, %(checksum)s);

-- name: schema_migrations_procrastinate_version
-- Returns the procrastinate version whose schema was last recorded, if any.
SELECT version
FROM flowstone_schema_migrations
WHERE component = 'procrastinate'
ORDER BY applied_at DESC, version DESC
LIMIT 1;

-- name: schema_procrastinate_present
-- Returns one row: whether Procrastinate's jobs table exists.
SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present;

-- name: schema_advisory_lock
-- Blocks until this session holds the migration lock.
SELECT pg_advisory_lock(%(key)s);

-- name: schema_advisory_unlock
-- Releases the migration lock of this session.
SELECT pg_advisory_unlock(%(key)s);
