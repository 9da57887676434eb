-- name: output_get
-- Returns the stored output (format, value, data) of a materialization, or nothing.
SELECT format, value, data FROM flowstone_outputs WHERE materialization_id = %(id)s;

-- name: output_delete
-- Deletes the stored output of a materialization (idempotent).
DELETE FROM flowstone_outputs WHERE materialization_id = %(id)s;

-- name: output_table_columns
-- Returns one row per column of a user table (name, type and its oid, string category, generated
-- or identity flags) with the table's oid and kind, resolving the name through search_path exactly
-- as the write statements will; nothing when no such table exists.
SELECT c.oid::bigint          AS table_oid,
       c.relkind::text        AS relkind,
       a.attname::text        AS column_name,
       format_type(a.atttypid, a.atttypmod) AS data_type,
       t.typname::text        AS type_name,
       a.atttypid::bigint     AS type_oid,
       t.typcategory::text    AS type_category,
       (a.attgenerated <> '') AS generated,
       (a.attidentity = 'a')  AS identity_always
FROM pg_class AS c
LEFT JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type AS t ON t.oid = a.atttypid
WHERE c.oid = to_regclass(
          CASE WHEN %(schema)s::text IS NULL THEN quote_ident(%(name)s::text)
               ELSE quote_ident(%(schema)s::text) || '.' || quote_ident(%(name)s::text) END)
ORDER BY a.attnum;

-- name: output_rows_lock
-- Takes the transaction-scoped exclusive lock of one partition of a user table (writers of a
-- rows-mode output); returns one row.
SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s::text, 0)) AS locked;

-- name: output_rows_lock_shared
-- Takes the transaction-scoped shared lock of one partition of a user table (readers of a
-- rows-mode output); returns one row.
SELECT pg_advisory_xact_lock_shared(hashtextextended(%(lock_key)s::text, 0)) AS locked;

-- name: output_gc_plan
-- Returns the succeeded materializations (id, asset, partition_key, output_ref) that are not among
-- the latest keep_last succeeded ones of their asset and partition (finished_at DESC, id DESC,
-- the order of latest()), leaving out runs that still have unfinished steps, and versions that a
-- running step may still be reading: one that was the latest when that step started (it looked
-- its inputs up then). Oldest first.
SELECT ranked.id, ranked.asset, ranked.partition_key, ranked.output_ref
FROM (
    SELECT m.id, m.run_id, m.asset, m.partition_key, m.output_ref, m.output_deleted_at, m.finished_at,
           row_number() OVER newest AS newer_rank,
           lag(m.finished_at) OVER newest AS superseded_at
    FROM flowstone_materializations AS m
    WHERE m.status = 'succeeded'
    WINDOW newest AS (PARTITION BY m.asset, m.partition_key ORDER BY m.finished_at DESC, m.id DESC)
) AS ranked
WHERE ranked.newer_rank > %(keep_last)s
  AND ranked.output_ref IS NOT NULL
  AND ranked.output_deleted_at IS NULL
  AND NOT EXISTS (
      SELECT 1
      FROM flowstone_materializations AS reader
      WHERE reader.status = 'running'
        AND reader.started_at >= ranked.finished_at AND reader.started_at < ranked.superseded_at)
  AND NOT EXISTS (
      SELECT 1
      FROM flowstone_materializations AS open_step
      WHERE open_step.run_id = ranked.run_id
        AND open_step.status IN ('pending', 'queued', 'running', 'waiting_approval'))
ORDER BY ranked.asset, ranked.partition_key, ranked.id;

-- name: output_gc_delete
-- Deletes the flowstone_outputs rows of the given materializations, re-checking that each has a
-- newer succeeded materialization of its asset and partition (so latest() never loses its output);
-- rows locked by another transaction are skipped (I18). Returns the materialization ids deleted.
DELETE FROM flowstone_outputs AS o
WHERE o.materialization_id IN (
    SELECT c.materialization_id
    FROM flowstone_outputs AS c
    JOIN flowstone_materializations AS m ON m.id = c.materialization_id
    WHERE c.materialization_id = ANY(%(ids)s::bigint[])
      AND m.status = 'succeeded'
      AND EXISTS (
          SELECT 1
          FROM flowstone_materializations AS newer
          WHERE newer.asset = m.asset
            AND newer.partition_key = m.partition_key
            AND newer.status = 'succeeded'
            AND (newer.finished_at, newer.id) > (m.finished_at, m.id))
    FOR UPDATE OF c SKIP LOCKED)
RETURNING o.materialization_id;

-- name: output_mark_deleted
-- Records that gc deleted the output versions of these materializations.
UPDATE flowstone_materializations
SET output_deleted_at = coalesce(%(now)s::timestamptz, now())
WHERE id = ANY(%(ids)s::bigint[]) AND output_deleted_at IS NULL;
