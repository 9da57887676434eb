-- name: pruning_steps
-- Deletes (FOR UPDATE SKIP LOCKED, a batch) the steps of runs that ended before their cutoff (the
-- asset's own, else the default), except what retention keeps: a succeeded step whose output is
-- still stored (gc ran first: those are the latest versions kept per partition) and any step a
-- lineage row or memoized skip still points at (the FKs; it goes once those are gone). Returns
-- the deleted steps' assets.
WITH doomed AS (
    SELECT m.id
    FROM flowstone_materializations AS m
    JOIN flowstone_runs AS r ON r.run_id = m.run_id
    WHERE r.status IN ('succeeded', 'failed', 'cancelled')
      AND r.finished_at < coalesce((%(cutoffs)s::jsonb ->> m.asset)::timestamptz, %(before)s::timestamptz)
      AND m.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')
      AND (m.status <> 'succeeded' OR m.output_deleted_at IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM flowstone_lineage AS l WHERE l.upstream_materialization_id = m.id)
      AND NOT EXISTS (SELECT 1 FROM flowstone_materializations AS k WHERE k.memoized_from = m.id)
    ORDER BY m.id
    LIMIT %(batch)s
    FOR UPDATE OF m SKIP LOCKED
)
DELETE FROM flowstone_materializations AS m
USING doomed
WHERE m.id = doomed.id
RETURNING m.asset;

-- name: pruning_steps_count
-- Counts what one pass of pruning_steps would delete (a dry run).
SELECT count(*) AS n
FROM flowstone_materializations AS m
JOIN flowstone_runs AS r ON r.run_id = m.run_id
WHERE r.status IN ('succeeded', 'failed', 'cancelled')
  AND r.finished_at < coalesce((%(cutoffs)s::jsonb ->> m.asset)::timestamptz, %(before)s::timestamptz)
  AND m.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')
  AND (m.status <> 'succeeded' OR m.output_deleted_at IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM flowstone_lineage AS l WHERE l.upstream_materialization_id = m.id)
  AND NOT EXISTS (SELECT 1 FROM flowstone_materializations AS k WHERE k.memoized_from = m.id);

-- name: pruning_runs
-- Deletes (a batch, SKIP LOCKED) the runs that ended before the cutoff and have no step left.
WITH doomed AS (
    SELECT r.run_id
    FROM flowstone_runs AS r
    WHERE r.status IN ('succeeded', 'failed', 'cancelled')
      AND r.finished_at < %(before)s::timestamptz
      AND NOT EXISTS (SELECT 1 FROM flowstone_materializations AS m WHERE m.run_id = r.run_id)
    ORDER BY r.created_at
    LIMIT %(batch)s
    FOR UPDATE OF r SKIP LOCKED
)
DELETE FROM flowstone_runs AS r
USING doomed
WHERE r.run_id = doomed.run_id
RETURNING r.run_id;

-- name: pruning_runs_count
-- Counts the runs that ended before the cutoff whose every step pruning_steps would delete in the
-- same pass (a dry run: a run goes once it has no step left). Same step rules as
-- pruning_steps_count.
SELECT count(*) AS n
FROM flowstone_runs AS r
WHERE r.status IN ('succeeded', 'failed', 'cancelled')
  AND r.finished_at < %(before)s::timestamptz
  AND NOT EXISTS (
      SELECT 1 FROM flowstone_materializations AS m
      WHERE m.run_id = r.run_id
        AND NOT (r.finished_at < coalesce((%(cutoffs)s::jsonb ->> m.asset)::timestamptz,
                                          %(before)s::timestamptz)
                 AND m.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')
                 AND (m.status <> 'succeeded' OR m.output_deleted_at IS NOT NULL)
                 AND NOT EXISTS (SELECT 1 FROM flowstone_lineage AS l
                                 WHERE l.upstream_materialization_id = m.id)
                 AND NOT EXISTS (SELECT 1 FROM flowstone_materializations AS k
                                 WHERE k.memoized_from = m.id)));

-- name: pruning_jobs
-- Deletes (a batch, SKIP LOCKED) Procrastinate jobs that ended (succeeded, failed, cancelled,
-- aborted) with no event since the cutoff, with their events (ON DELETE CASCADE); a job a
-- periodic-defer row still names is left for Procrastinate to release. Returns their ids.
WITH doomed AS (
    SELECT j.id
    FROM procrastinate_jobs AS j
    WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
      AND NOT EXISTS (SELECT 1 FROM procrastinate_events AS e
                      WHERE e.job_id = j.id AND e.at >= %(before)s::timestamptz)
      AND NOT EXISTS (SELECT 1 FROM procrastinate_periodic_defers AS d WHERE d.job_id = j.id)
    ORDER BY j.id
    LIMIT %(batch)s
    FOR UPDATE OF j SKIP LOCKED
)
DELETE FROM procrastinate_jobs AS j
USING doomed
WHERE j.id = doomed.id
RETURNING j.id;

-- name: pruning_jobs_count
-- Counts the jobs pruning_jobs would delete (a dry run).
SELECT count(*) AS n
FROM procrastinate_jobs AS j
WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
  AND NOT EXISTS (SELECT 1 FROM procrastinate_events AS e
                  WHERE e.job_id = j.id AND e.at >= %(before)s::timestamptz)
  AND NOT EXISTS (SELECT 1 FROM procrastinate_periodic_defers AS d WHERE d.job_id = j.id);

-- name: pruning_audit_partitions
-- Creates the audit log's partitions of this month and the next three (when missing).
SELECT flowstone_audit_ensure_partitions(coalesce(%(now)s::timestamptz, now()), 3) AS months;

-- name: pruning_audit_drop_before
-- Drops whole months of the audit log before the cutoff (or counts them, dry run); returns them.
SELECT flowstone_audit_drop_before(%(cutoff)s::timestamptz, %(actor)s, %(dry_run)s) AS dropped;

-- name: pruning_step_logs
-- Deletes (a batch, oldest first, SKIP LOCKED) step log lines written before the cutoff; returns
-- how many.
WITH doomed AS (
    SELECT l.id
    FROM flowstone_step_logs AS l
    WHERE l.at < %(before)s::timestamptz
    ORDER BY l.at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM flowstone_step_logs AS l
USING doomed
WHERE l.id = doomed.id
RETURNING l.id;

-- name: pruning_fold_status_counts
-- Folds the status counters written by backends that are gone into shard 0 (migration 0017), so
-- the counter table's size follows the live sessions; returns how many rows were folded.
SELECT flowstone_asset_status_fold() AS folded;
