-- name: materialization_plan
-- Plans the steps of a run pending, each in its own batch (batch_key = partition_key), in one
-- statement (one call of the partition-status trigger, not one per step); an existing row is left
-- as it is.
INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, pending_upstream,
                                        code_version, batch_key, created_at)
SELECT %(run_id)s, s.asset, s.partition_key, 'pending', s.pending_upstream, s.code_version,
       s.partition_key, coalesce(%(now)s::timestamptz, now())
FROM unnest(%(assets)s::text[], %(keys)s::text[], %(pending_upstream)s::int[],
            %(code_versions)s::text[]) AS s(asset, partition_key, pending_upstream, code_version)
ON CONFLICT ON CONSTRAINT flowstone_materializations_identity_key DO NOTHING;

-- name: materialization_copy_queued
-- COPY target for bulk backfills: steps written directly as queued with their batch and job.
COPY flowstone_materializations (run_id, asset, partition_key, status, batch_key, queued_at,
                                 code_version, job_id)
FROM STDIN;

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

-- name: materialization_claim
-- Claims the steps one unit of work runs, for running: every step of (run, asset) whose batch key is
-- batch_key, and the step (run, asset, batch_key) itself, which is inserted running when it has no
-- row yet (concurrent claims never duplicate a step: the identity key, I7). A claimed step moves from
-- queued, pending with no unfinished upstream step, or with reclaim from running (a redelivered
-- job whose worker died: only the steps of that job when job_id is given), to running with
-- attempt + 1; a step in any other status is left as it is. A queued run becomes running. The
-- claim commits asynchronously (ADR 0009): losing it in a crash leaves the steps claimable, and
-- the success commit that follows flushes the WAL up to and including it. Returns each claimed row with its run's kind and config, in key order;
-- nothing when nothing could be claimed or the run does not exist.
WITH cfg AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting,
           coalesce(%(now)s::timestamptz, now()) AS at
), run AS (
    SELECT r.run_id, r.kind, r.config FROM flowstone_runs AS r WHERE r.run_id = %(run_id)s
), unit AS (
    -- Two index lookups, not one OR: a prepared statement's generic plan would otherwise scan
    -- every step of the (run, asset) for it.
    SELECT b.id FROM flowstone_materializations AS b
    WHERE b.run_id = %(run_id)s AND b.asset = %(asset)s AND b.batch_key = %(batch_key)s
    UNION
    SELECT l.id FROM flowstone_materializations AS l
    WHERE l.asset = %(asset)s AND l.partition_key = %(batch_key)s AND l.run_id = %(run_id)s
), updated AS (
    UPDATE flowstone_materializations AS m
    SET status       = 'running',
        attempt      = m.attempt + 1,
        started_at   = cfg.at,
        finished_at  = NULL,
        code_version = %(code_version)s
    FROM cfg, unit
    WHERE m.id = unit.id
      -- a pending step only once nothing upstream is unfinished: a worker continuing a chain
      -- after a success that a server crash lost (ADR 0013) must not run its downstream step
      AND (m.status = 'queued' OR (m.status = 'pending' AND m.pending_upstream = 0)
           OR (m.status = 'running' AND %(reclaim)s
               AND (%(job_id)s::bigint IS NULL OR m.job_id = %(job_id)s::bigint)))
    RETURNING m.*
), inserted AS (
    -- The unit always holds its lone step's row when it exists (the batch's first key is the
    -- batch key), so an empty unit means the step has no row yet.
    INSERT INTO flowstone_materializations AS m (run_id, asset, partition_key, status, attempt,
                                                 started_at, created_at, code_version, batch_key)
    SELECT run.run_id, %(asset)s::text, %(batch_key)s::text, 'running', 1, cfg.at, cfg.at,
           %(code_version)s::text, %(batch_key)s::text
    FROM run, cfg
    WHERE NOT EXISTS (SELECT 1 FROM unit)
    ON CONFLICT ON CONSTRAINT flowstone_materializations_identity_key DO NOTHING
    RETURNING m.*
), claimed AS (
    SELECT * FROM updated
    UNION ALL
    SELECT * FROM inserted
), started AS (
    UPDATE flowstone_runs AS r
    SET status = 'running'
    WHERE r.run_id = %(run_id)s AND r.status = 'queued' AND EXISTS (SELECT 1 FROM claimed)
)
SELECT claimed.*, run.kind AS run_kind, run.config AS run_config
FROM claimed, run
ORDER BY claimed.partition_key COLLATE "C";

-- name: materialization_inputs
-- Returns, per requested (asset, partition_key), this run's row if the run has one (any status),
-- else the latest succeeded row (finished_at DESC, id DESC), with its stored output when the
-- Postgres IO manager holds it (output_format NULL otherwise). A step of this run that memoization
-- skipped stands for the row it reused (memoized_from): that row is returned, with in_run true.
WITH pick AS (
    SELECT DISTINCT ON (m.asset, m.partition_key) m.id, m.memoized_from, (m.run_id = %(run_id)s) AS in_run
    FROM flowstone_materializations AS m
    JOIN unnest(%(assets)s::text[], %(keys)s::text[]) AS want(asset, partition_key)
      ON m.asset = want.asset AND m.partition_key = want.partition_key
    WHERE m.run_id = %(run_id)s OR m.status = 'succeeded'
    ORDER BY m.asset, m.partition_key, (m.run_id = %(run_id)s) DESC, m.finished_at DESC NULLS LAST,
             m.id DESC
)
SELECT m.*, pick.in_run, o.format AS output_format, o.value AS output_value, o.data AS output_data
FROM pick
JOIN flowstone_materializations AS m ON m.id = coalesce(pick.memoized_from, pick.id)
LEFT JOIN flowstone_outputs AS o ON o.materialization_id = m.id AND m.status = 'succeeded';

-- name: materialization_succeed
-- In one statement, for the running attempts of one or more steps: marks each succeeded, writes
-- its lineage edges, its audit event and (Postgres IO manager) its output, and releases the fan-in
-- (I14) of the items that release: each step downstream of them has its count of unfinished
-- upstream steps lowered by the number of its upstream steps that ended here, and becomes queued
-- when that reaches zero. A step memoization skipped (memoized_from set) ends skipped instead,
-- pointing at the reused row, with no output and no lineage of its own (audit event
-- materialization.memoized), and releases like a success. Returns the rows that ended, each with
-- `released`: the [asset, batch key] of every step this statement queued, in the order of the items
-- that released them. An attempt that no longer holds its step is left out and releases nothing.
WITH item AS (
    -- One JSON parameter for the items (a dozen arrays cost the client more to build and send),
    -- and their outputs' bytes beside it, in the same order.
    SELECT *
    FROM ROWS FROM (jsonb_to_recordset(%(items)s::jsonb)
                        AS (id bigint, attempt int, output_ref jsonb, metadata jsonb, output_format text,
                            output_value text, memoized_from bigint, lineage jsonb, release boolean),
                    unnest(%(output_datas)b::bytea[]))
         WITH ORDINALITY
         AS i(id, attempt, output_ref, metadata, output_format, output_value, memoized_from, lineage,
              release, output_data, ord)
), done AS (
    UPDATE flowstone_materializations AS m
    SET status        = CASE WHEN item.memoized_from IS NULL THEN 'succeeded' ELSE 'skipped' END,
        finished_at   = coalesce(%(now)s::timestamptz, now()),
        output_ref    = item.output_ref,
        metadata      = item.metadata,
        memoized_from = item.memoized_from,
        error         = NULL
    FROM item
    WHERE m.id = item.id AND m.status = 'running' AND m.attempt = item.attempt
    RETURNING m.*
), edges AS (
    -- lineage: [[upstream materialization id, input name], ...]
    INSERT INTO flowstone_lineage (materialization_id, upstream_materialization_id, input_name, created_at)
    SELECT done.id, (e.edge ->> 0)::bigint, e.edge ->> 1, done.finished_at
    FROM done
    JOIN item ON item.id = done.id
    CROSS JOIN LATERAL jsonb_array_elements(item.lineage) AS e(edge)
    WHERE done.memoized_from IS NULL
), audit AS (
    INSERT INTO flowstone_audit_log (event, actor, run_id, materialization_id, asset, partition_key,
                                     details, at)
    SELECT CASE WHEN done.memoized_from IS NULL THEN 'materialization.succeeded'
                ELSE 'materialization.memoized' END,
           %(actor)s, done.run_id, done.id, done.asset, done.partition_key,
           jsonb_strip_nulls(jsonb_build_object('attempt', done.attempt,
                                                'memoized_from', done.memoized_from)),
           done.finished_at
    FROM done
), output AS (
    INSERT INTO flowstone_outputs (materialization_id, asset, partition_key, format, value, data,
                                   created_at)
    SELECT done.id, done.asset, done.partition_key, item.output_format, item.output_value::json,
           item.output_data, done.finished_at
    FROM done
    JOIN item ON item.id = done.id
    WHERE item.output_format IS NOT NULL
), fan_in AS (
    -- Per downstream step: how many of its upstream steps ended here and release. Only rows of
    -- `done` count: an attempt that lost its step releases nothing.
    SELECT e.run_id, e.asset, e.partition_key, count(*) AS ended, min(item.ord) AS first_item
    FROM done
    JOIN item ON item.id = done.id AND item.release
    JOIN flowstone_step_edges AS e
      ON e.run_id = done.run_id AND e.upstream_asset = done.asset
     AND e.upstream_partition_key = done.partition_key
    GROUP BY e.run_id, e.asset, e.partition_key
), released AS (
    UPDATE flowstone_materializations AS m
    SET pending_upstream = m.pending_upstream - f.ended,
        status           = CASE WHEN m.pending_upstream = f.ended THEN 'queued' ELSE m.status END,
        queued_at        = CASE WHEN m.pending_upstream = f.ended
                                THEN coalesce(%(now)s::timestamptz, now()) ELSE m.queued_at END,
        batch_key        = CASE WHEN m.pending_upstream = f.ended THEN m.partition_key
                                ELSE m.batch_key END
    FROM fan_in AS f
    WHERE m.run_id = f.run_id AND m.asset = f.asset AND m.partition_key = f.partition_key
      AND m.status = 'pending'
    RETURNING m.asset, m.batch_key, m.status, f.first_item
)
SELECT done.*,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(r.asset, r.batch_key)
                                  ORDER BY r.first_item, r.asset, r.batch_key), '[]'::jsonb)
        FROM released AS r
        WHERE r.status = 'queued') AS released
FROM done;

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

-- name: materialization_cancel_run
-- Cancels every step of a run that has not started or waits for approval; returns their job ids
-- (to cancel the jobs).
UPDATE flowstone_materializations
SET status      = 'cancelled',
    finished_at = coalesce(%(now)s::timestamptz, now())
WHERE run_id = %(run_id)s AND status IN ('pending', 'queued', 'waiting_approval')
RETURNING id, asset, partition_key, job_id;

-- name: materialization_resume_approved
-- An approved step goes back to queued (same row, same three-key job args); returns it.
UPDATE flowstone_materializations
SET status    = 'queued',
    queued_at = coalesce(%(now)s::timestamptz, now()),
    batch_key = partition_key
WHERE id = %(id)s AND status = 'waiting_approval'
RETURNING *;

-- name: materialization_end_waiting
-- A rejected or timed-out step ends (rejected or failed) with its error; returns it.
UPDATE flowstone_materializations
SET status      = %(status)s,
    finished_at = coalesce(%(now)s::timestamptz, now()),
    error       = %(error)s
WHERE id = %(id)s AND status = 'waiting_approval'
RETURNING *;

-- name: materialization_get_step
-- Returns the step row of (run, asset, partition), or nothing.
SELECT *
FROM flowstone_materializations
WHERE run_id = %(run_id)s AND asset = %(asset)s AND partition_key = %(partition_key)s;

-- name: materialization_get
-- Returns the materialization with this id, or nothing.
SELECT * FROM flowstone_materializations WHERE id = %(id)s;

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

-- name: materialization_newest_all
-- Returns the newest row (any status, highest id) of every (asset, partition_key) of one asset.
SELECT *
FROM (SELECT DISTINCT ON (partition_key) *
      FROM flowstone_materializations
      WHERE asset = %(asset)s
      ORDER BY partition_key, id DESC) AS newest
ORDER BY partition_key COLLATE "C";

-- name: materialization_succeeded_keys
-- Returns which of the given partition keys of an asset have a succeeded materialization.
SELECT DISTINCT partition_key
FROM flowstone_materializations
WHERE asset = %(asset)s AND partition_key = ANY(%(keys)s::text[]) AND status = 'succeeded';

-- name: materialization_covered_keys
-- Returns which of the given partition keys of an asset succeeded or are in flight (planned,
-- queued, running or waiting for approval): the ones not missing.
SELECT DISTINCT partition_key
FROM flowstone_materializations
WHERE asset = %(asset)s AND partition_key = ANY(%(keys)s::text[])
  AND status IN ('succeeded', 'pending', 'queued', 'running', 'waiting_approval');

-- name: materialization_orphaned_claim
-- Claims (FOR UPDATE SKIP LOCKED, I18) the active steps of queued runs whose job ended without
-- them: queued or running steps whose job is succeeded, failed, cancelled or aborted, or gone (a
-- worker whose outcome write failed on a lost connection, a claim lost in a server crash). Returns
-- them with the status of their job.
SELECT m.*, j.status::text AS job_status
FROM flowstone_materializations AS m
LEFT JOIN procrastinate_jobs AS j ON j.id = m.job_id
WHERE m.status IN ('queued', 'running')
  AND m.job_id IS NOT NULL
  AND (j.id IS NULL OR j.status IN ('succeeded', 'failed', 'cancelled', 'aborted'))
ORDER BY m.id
LIMIT %(limit)s
FOR UPDATE OF m SKIP LOCKED;

-- name: materialization_set_job
-- Records the Procrastinate job id of one step (a step resumed on its own, e.g. after approval).
UPDATE flowstone_materializations SET job_id = %(job_id)s WHERE id = %(id)s;

-- name: materialization_abandon_run
-- The steps of an in-process run whose process is gone: running and queued steps, and pending
-- ones with no upstream step left, become failed with the error given; returns them.
UPDATE flowstone_materializations
SET status      = 'failed',
    finished_at = coalesce(%(now)s::timestamptz, now()),
    error       = %(error)s
WHERE run_id = %(run_id)s
  AND (status IN ('running', 'queued') OR (status = 'pending' AND pending_upstream = 0))
RETURNING *;

-- name: materialization_reopen
-- A retry of a run: the steps that did not succeed in the given statuses (only those whose error
-- has the given type, when one is given), and every step downstream of them that did not succeed,
-- go back to pending in their own batch; returns them. A memoized skip (memoized_from) counts as
-- a success: it is never reopened.
WITH RECURSIVE roots AS (
    SELECT m.asset, m.partition_key
    FROM flowstone_materializations AS m
    WHERE m.run_id = %(run_id)s AND m.status = ANY(%(statuses)s::text[]) AND m.memoized_from IS NULL
      AND (%(error_type)s::text IS NULL OR m.error ->> 'type' = %(error_type)s::text)
      AND (%(assets)s::text[] IS NULL OR m.asset = ANY(%(assets)s::text[]))
), reach (asset, partition_key) AS (
    SELECT asset, partition_key FROM roots
    UNION
    SELECT e.asset, e.partition_key
    FROM flowstone_step_edges AS e
    JOIN reach AS r ON e.upstream_asset = r.asset AND e.upstream_partition_key = r.partition_key
    WHERE e.run_id = %(run_id)s
)
UPDATE flowstone_materializations AS m
SET status      = 'pending',
    finished_at = NULL,
    batch_key   = m.partition_key
FROM reach
WHERE m.run_id = %(run_id)s AND m.asset = reach.asset AND m.partition_key = reach.partition_key
  AND m.status IN ('failed', 'skipped', 'cancelled', 'rejected') AND m.memoized_from IS NULL
RETURNING m.*;

-- name: materialization_recount_pending
-- Recomputes pending_upstream of the pending steps of a run from the step edges: the number of
-- its upstream steps that have not succeeded (a memoized skip counts as succeeded).
UPDATE flowstone_materializations AS m
SET pending_upstream = c.n
FROM (SELECT e.asset, e.partition_key,
             count(*) FILTER (WHERE u.status <> 'succeeded' AND u.memoized_from IS NULL) AS n
      FROM flowstone_step_edges AS e
      JOIN flowstone_materializations AS u
        ON u.run_id = e.run_id AND u.asset = e.upstream_asset
       AND u.partition_key = e.upstream_partition_key
      WHERE e.run_id = %(run_id)s
      GROUP BY e.asset, e.partition_key) AS c
WHERE m.run_id = %(run_id)s AND m.status = 'pending'
  AND m.asset = c.asset AND m.partition_key = c.partition_key;

-- name: materialization_skip_blocked
-- Marks skipped every pending step of a run that is downstream of a step that ended without
-- success (failed, rejected, cancelled, skipped but not memoized); returns them.
WITH RECURSIVE reach (asset, partition_key) AS (
    SELECT e.asset, e.partition_key
    FROM flowstone_step_edges AS e
    JOIN flowstone_materializations AS f
      ON f.run_id = e.run_id AND f.asset = e.upstream_asset
     AND f.partition_key = e.upstream_partition_key
    WHERE e.run_id = %(run_id)s AND f.status IN ('failed', 'rejected', 'cancelled', 'skipped')
      AND f.memoized_from IS NULL
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
  AND m.status = 'pending'
RETURNING m.*;

-- name: materialization_ready
-- Returns the pending steps of a run with no upstream step left (ready to run), in key order.
SELECT asset, partition_key
FROM flowstone_materializations
WHERE run_id = %(run_id)s AND status = 'pending' AND pending_upstream = 0
ORDER BY asset COLLATE "C", partition_key COLLATE "C";

-- name: materialization_get_many
-- Returns the materializations with these ids (those that exist).
SELECT * FROM flowstone_materializations WHERE id = ANY(%(ids)s::bigint[]);
