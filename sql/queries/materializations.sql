-- name: materialization_plan
-- Plans one step of a run (executemany); an existing row is left as it is.
INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, pending_upstream,
                                        code_version, created_at)
VALUES (%(run_id)s, %(asset)s, %(partition_key)s, 'pending', %(pending_upstream)s, %(code_version)s,
        coalesce(%(now)s::timestamptz, now()))
ON CONFLICT ON CONSTRAINT flowstone_materializations_identity_key DO NOTHING;

-- name: materialization_start
-- Claims a step for running (upsert): returns the row with attempt incremented, or nothing when the
-- step is in a status that cannot start (terminal, waiting, or running without reclaim).
-- The claim commits asynchronously (synchronous_commit off for this statement's transaction only):
-- losing it in a crash leaves the step pending, which is safe, and the success commit that follows
-- flushes the WAL up to and including it. Saves one fsync per step.
INSERT INTO flowstone_materializations AS m (run_id, asset, partition_key, status, attempt,
                                             started_at, created_at, code_version)
SELECT v.run_id, v.asset, v.partition_key, 'running', 1, v.at, v.at, v.code_version
FROM (VALUES (%(run_id)s::uuid, %(asset)s::text, %(partition_key)s::text,
              coalesce(%(now)s::timestamptz, now()), %(code_version)s::text))
     AS v(run_id, asset, partition_key, at, code_version),
     (SELECT set_config('synchronous_commit', 'off', true)) AS cfg
ON CONFLICT ON CONSTRAINT flowstone_materializations_identity_key DO UPDATE
SET status       = 'running',
    attempt      = m.attempt + 1,
    started_at   = EXCLUDED.started_at,
    finished_at  = NULL,
    code_version = EXCLUDED.code_version
WHERE m.status IN ('pending', 'queued') OR (m.status = 'running' AND %(reclaim)s)
RETURNING m.*;

-- name: materialization_get_step
-- Returns the step row of (run, asset, partition), or nothing.
SELECT *
FROM flowstone_materializations
WHERE run_id = %(run_id)s AND asset = %(asset)s AND partition_key = %(partition_key)s;

-- name: materialization_get
-- Returns the materialization with this id, or nothing.
SELECT * FROM flowstone_materializations WHERE id = %(id)s;

-- name: materialization_inputs
-- Returns, per requested (asset, partition_key), this run's row if the run has one (any status),
-- else the latest succeeded row (finished_at DESC, id DESC), with its stored output when the
-- Postgres IO manager holds it (output_format NULL otherwise).
SELECT DISTINCT ON (m.asset, m.partition_key) m.*, (m.run_id = %(run_id)s) AS in_run,
       o.format AS output_format, o.value AS output_value, o.data AS output_data
FROM flowstone_materializations AS m
JOIN unnest(%(assets)s::text[], %(keys)s::text[]) AS want(asset, partition_key)
  ON m.asset = want.asset AND m.partition_key = want.partition_key
LEFT JOIN flowstone_outputs AS o ON o.materialization_id = m.id AND m.status = 'succeeded'
WHERE m.run_id = %(run_id)s OR m.status = 'succeeded'
ORDER BY m.asset, m.partition_key, (m.run_id = %(run_id)s) DESC, m.finished_at DESC NULLS LAST, m.id DESC;

-- name: materialization_succeed
-- In one statement: marks a running attempt succeeded, writes its lineage edges, the audit event
-- and (Postgres IO manager) its output. Returns the row, or nothing when the attempt no longer
-- holds the step.
WITH done AS (
    UPDATE flowstone_materializations
    SET status      = 'succeeded',
        finished_at = coalesce(%(now)s::timestamptz, now()),
        output_ref  = %(output_ref)s,
        metadata    = %(metadata)s,
        error       = NULL
    WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
    RETURNING *
), edges AS (
    INSERT INTO flowstone_lineage (materialization_id, upstream_materialization_id, input_name, created_at)
    SELECT done.id, e.upstream_id, e.input_name, done.finished_at
    FROM done, unnest(%(upstream_ids)s::bigint[], %(input_names)s::text[]) AS e(upstream_id, input_name)
), audit AS (
    INSERT INTO flowstone_audit_log (event, actor, run_id, materialization_id, asset, partition_key,
                                     details, at)
    SELECT 'materialization.succeeded', %(actor)s, done.run_id, done.id, done.asset,
           done.partition_key, jsonb_build_object('attempt', done.attempt), done.finished_at
    FROM done
), output AS (
    INSERT INTO flowstone_outputs (materialization_id, asset, partition_key, format, value, data,
                                   created_at)
    SELECT done.id, done.asset, done.partition_key, %(output_format)s::text,
           %(output_value)s::jsonb, %(output_data)s::bytea, done.finished_at
    FROM done
    WHERE %(output_format)s::text IS NOT NULL
)
SELECT * FROM done;

-- name: materialization_fail
-- In one statement: marks a running attempt failed with its error and writes the audit event.
-- Returns the row, or nothing when the attempt no longer holds the step.
WITH done AS (
    UPDATE flowstone_materializations
    SET status      = 'failed',
        finished_at = coalesce(%(now)s::timestamptz, now()),
        error       = %(error)s
    WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
    RETURNING *
), audit AS (
    INSERT INTO flowstone_audit_log (event, actor, run_id, materialization_id, asset, partition_key,
                                     details, at)
    SELECT 'materialization.failed', %(actor)s, done.run_id, done.id, done.asset, done.partition_key,
           jsonb_build_object('attempt', done.attempt, 'error_type', done.error ->> 'type'),
           done.finished_at
    FROM done
)
SELECT * FROM done;

-- name: materialization_skip
-- Marks not-yet-started steps of a run skipped (an upstream failed); returns the skipped rows.
UPDATE flowstone_materializations AS m
SET status      = 'skipped',
    finished_at = coalesce(%(now)s::timestamptz, now()),
    error       = %(error)s
FROM unnest(%(assets)s::text[], %(keys)s::text[]) AS s(asset, partition_key)
WHERE m.run_id = %(run_id)s
  AND m.asset = s.asset AND m.partition_key = s.partition_key
  AND m.status IN ('pending', 'queued')
RETURNING m.*;

-- name: materialization_latest
-- Returns the latest succeeded row of (asset, partition_key): finished_at DESC, id DESC (I8).
SELECT *
FROM flowstone_materializations
WHERE asset = %(asset)s AND partition_key = %(partition_key)s AND status = 'succeeded'
ORDER BY finished_at DESC, id DESC
LIMIT 1;

-- name: materialization_history
-- Returns the rows of (asset, partition_key), newest id first.
SELECT *
FROM flowstone_materializations
WHERE asset = %(asset)s AND partition_key = %(partition_key)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: materialization_run_steps
-- Returns every step of a run, in id order.
SELECT * FROM flowstone_materializations WHERE run_id = %(run_id)s ORDER BY id;

-- name: materialization_latest_all
-- Returns the latest succeeded row of every (asset, partition_key), optionally of one asset.
SELECT *
FROM flowstone_latest_materializations
WHERE %(asset)s::text IS NULL OR asset = %(asset)s
ORDER BY asset COLLATE "C", partition_key COLLATE "C";

-- name: materialization_succeeded_keys
-- Returns which of the given partition keys of an asset have a succeeded materialization.
SELECT DISTINCT partition_key
FROM flowstone_materializations
WHERE asset = %(asset)s AND partition_key = ANY(%(keys)s::text[]) AND status = 'succeeded';

-- name: output_get
-- Returns the stored output (format, value, data) of a materialization, or nothing.
SELECT format, value, data FROM flowstone_outputs WHERE materialization_id = %(id)s;

-- name: output_delete
-- Deletes the stored output of a materialization (idempotent).
DELETE FROM flowstone_outputs WHERE materialization_id = %(id)s;

-- name: materialization_newest_all
-- Returns the newest row (any status, highest id) of every (asset, partition_key) of one asset.
SELECT *
FROM (SELECT DISTINCT ON (partition_key) *
      FROM flowstone_materializations
      WHERE asset = %(asset)s
      ORDER BY partition_key, id DESC) AS newest
ORDER BY partition_key COLLATE "C";

-- name: materialization_covered_keys
-- Returns which of the given partition keys of an asset succeeded or are in flight (planned,
-- queued, running or waiting for approval): the ones not missing.
SELECT DISTINCT partition_key
FROM flowstone_materializations
WHERE asset = %(asset)s AND partition_key = ANY(%(keys)s::text[])
  AND status IN ('succeeded', 'pending', 'queued', 'running', 'waiting_approval');
