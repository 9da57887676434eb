-- name: step_edges_insert
-- Records one step-level edge of a run (executemany).
INSERT INTO flowstone_step_edges (run_id, upstream_asset, upstream_partition_key, asset, partition_key)
VALUES (%(run_id)s, %(upstream_asset)s, %(upstream_partition_key)s, %(asset)s, %(partition_key)s);

-- name: materialization_mark_queued
-- Moves planned steps of a run from pending to queued under their batch key; returns the
-- (asset, partition_key, batch_key) of the rows that moved.
UPDATE flowstone_materializations AS m
SET status    = 'queued',
    queued_at = coalesce(%(now)s::timestamptz, now()),
    batch_key = s.batch_key
FROM unnest(%(assets)s::text[], %(keys)s::text[], %(batch_keys)s::text[])
     AS s(asset, partition_key, batch_key)
WHERE m.run_id = %(run_id)s
  AND m.asset = s.asset AND m.partition_key = s.partition_key
  AND m.status = 'pending'
RETURNING m.asset, m.partition_key, m.batch_key;

-- name: materialization_set_jobs
-- Records the Procrastinate job id of every step of a run by (asset, batch_key).
UPDATE flowstone_materializations AS m
SET job_id = j.job_id
FROM unnest(%(assets)s::text[], %(batch_keys)s::text[], %(job_ids)s::bigint[])
     AS j(asset, batch_key, job_id)
WHERE m.run_id = %(run_id)s AND m.asset = j.asset AND m.batch_key = j.batch_key;

-- name: materialization_release_downstream
-- Fan-in (I14): decrements the unfinished-upstream counter of the steps that read a step that just
-- succeeded; the ones reaching zero become queued. Returns the rows that became queued.
UPDATE flowstone_materializations AS m
SET pending_upstream = m.pending_upstream - 1,
    status           = CASE WHEN m.pending_upstream = 1 THEN 'queued' ELSE m.status END,
    queued_at        = CASE WHEN m.pending_upstream = 1 THEN coalesce(%(now)s::timestamptz, now())
                            ELSE m.queued_at END,
    batch_key        = CASE WHEN m.pending_upstream = 1 THEN m.partition_key ELSE m.batch_key END
FROM flowstone_step_edges AS e
WHERE e.run_id = %(run_id)s
  AND e.upstream_asset = %(asset)s AND e.upstream_partition_key = %(partition_key)s
  AND m.run_id = e.run_id AND m.asset = e.asset AND m.partition_key = e.partition_key
  AND m.status = 'pending'
  -- only when this attempt's success committed in this transaction (attempts are unique)
  AND EXISTS (SELECT 1 FROM flowstone_materializations AS s
              WHERE s.id = %(step_id)s AND s.status = 'succeeded' AND s.attempt = %(attempt)s)
RETURNING m.asset, m.partition_key, m.status, m.batch_key;

-- name: materialization_skip_reachable
-- Marks every not-yet-started step reachable from a step that ended without success skipped;
-- returns the skipped rows.
WITH RECURSIVE reach (asset, partition_key) AS (
    SELECT e.asset, e.partition_key
    FROM flowstone_step_edges AS e
    WHERE e.run_id = %(run_id)s
      AND e.upstream_asset = %(asset)s AND e.upstream_partition_key = %(partition_key)s
    UNION
    SELECT e.asset, e.partition_key
    FROM flowstone_step_edges AS e
    JOIN reach AS r ON e.upstream_asset = r.asset AND e.upstream_partition_key = r.partition_key
    WHERE e.run_id = %(run_id)s
)
UPDATE flowstone_materializations AS m
SET status      = 'skipped',
    finished_at = coalesce(%(now)s::timestamptz, now()),
    error       = %(error)s
FROM reach
WHERE m.run_id = %(run_id)s AND m.asset = reach.asset AND m.partition_key = reach.partition_key
  AND m.status IN ('pending', 'queued')
RETURNING m.*;

-- name: materialization_retry_later
-- A retryable failure with attempts left: running -> queued, keeping attempt and the error, with
-- an audit event. Returns the row, or nothing when the attempt no longer holds the step.
WITH moved AS (
    UPDATE flowstone_materializations
    SET status    = 'queued',
        queued_at = coalesce(%(now)s::timestamptz, now()),
        error     = %(error)s
    WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
    RETURNING *
), audit AS (
    INSERT INTO flowstone_audit_log (event, actor, run_id, materialization_id, asset, partition_key,
                                     details, at)
    SELECT 'materialization.retrying', %(actor)s, moved.run_id, moved.id, moved.asset,
           moved.partition_key,
           jsonb_build_object('attempt', moved.attempt, 'retry_in_s', %(retry_in_s)s::float8,
                              'error_type', moved.error ->> 'type'),
           coalesce(%(now)s::timestamptz, now())
    FROM moved
)
SELECT * FROM moved;

-- name: materialization_fail_unclaimed
-- Records an error on a step that could not even start (unknown asset, malformed job); returns
-- the row, or nothing when no such unfinished step exists.
WITH failed AS (
    UPDATE flowstone_materializations
    SET status      = 'failed',
        finished_at = coalesce(%(now)s::timestamptz, now()),
        error       = %(error)s
    WHERE run_id = %(run_id)s AND asset = %(asset)s AND partition_key = %(partition_key)s
      AND status IN ('pending', 'queued', 'running')
    RETURNING *
), audit AS (
    INSERT INTO flowstone_audit_log (event, actor, run_id, materialization_id, asset, partition_key,
                                     details, at)
    SELECT 'materialization.failed', %(actor)s, failed.run_id, failed.id, failed.asset,
           failed.partition_key, jsonb_build_object('error_type', failed.error ->> 'type'),
           coalesce(%(now)s::timestamptz, now())
    FROM failed
)
SELECT * FROM failed;

-- name: run_step_counts
-- Returns (status, count) of the steps of a run.
SELECT status, count(*) AS n
FROM flowstone_materializations
WHERE run_id = %(run_id)s
GROUP BY status
ORDER BY status;

-- name: run_cancel_steps
-- Cancels every step of a run that has not started; returns their job ids (to cancel the jobs).
UPDATE flowstone_materializations
SET status      = 'cancelled',
    finished_at = coalesce(%(now)s::timestamptz, now())
WHERE run_id = %(run_id)s AND status IN ('pending', 'queued')
RETURNING id, asset, partition_key, job_id;

-- name: run_set_status
-- Sets a run's status when it is not terminal; returns the run.
UPDATE flowstone_runs
SET status = %(status)s
WHERE run_id = %(run_id)s AND status NOT IN ('succeeded', 'failed', 'cancelled')
RETURNING run_id, kind, selection, config, tags, requested_by, status, created_at, finished_at;

-- name: queue_stalled_jobs_claim
-- Claims (FOR UPDATE SKIP LOCKED, I18) FlowStone jobs in 'doing' whose worker is gone or has not
-- sent a heartbeat for the given seconds; returns their ids.
SELECT j.id
FROM procrastinate_jobs AS j
LEFT JOIN procrastinate_workers AS w ON w.id = j.worker_id
WHERE j.status = 'doing'
  AND j.task_name = ANY(%(task_names)s::text[])
  AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %(seconds)s::float8))
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED;

-- name: materialization_copy_queued
-- COPY target for bulk backfills: steps written directly as queued with their batch and job.
COPY flowstone_materializations (run_id, asset, partition_key, status, batch_key, queued_at,
                                 code_version, job_id)
FROM STDIN;

-- name: materialization_claim_job
-- Claims the steps a job runs (its batch) for running, in one statement with an asynchronous
-- commit (as materialization_start); returns each claimed row with its run's kind and config.
WITH cfg AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
), claimed AS (
    UPDATE flowstone_materializations AS m
    SET status       = 'running',
        attempt      = m.attempt + 1,
        started_at   = coalesce(%(now)s::timestamptz, now()),
        finished_at  = NULL,
        code_version = %(code_version)s
    FROM cfg
    WHERE m.run_id = %(run_id)s AND m.asset = %(asset)s AND m.batch_key = %(batch_key)s
      AND (m.status IN ('pending', 'queued') OR (m.status = 'running' AND %(reclaim)s))
    RETURNING m.*
), started AS (
    -- the run is running from its first claimed step on
    UPDATE flowstone_runs AS r
    SET status = 'running'
    WHERE r.run_id = %(run_id)s AND r.status = 'queued' AND EXISTS (SELECT 1 FROM claimed)
)
SELECT claimed.*, r.kind AS run_kind, r.config AS run_config
FROM claimed
JOIN flowstone_runs AS r ON r.run_id = claimed.run_id
ORDER BY claimed.partition_key COLLATE "C";
