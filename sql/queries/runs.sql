-- name: run_insert
-- Inserts a run; returns nothing.
INSERT INTO flowstone_runs (run_id, kind, selection, config, tags, requested_by, status, created_at)
VALUES (%(run_id)s, %(kind)s, %(selection)s, %(config)s, %(tags)s, %(requested_by)s, %(status)s,
        coalesce(%(now)s::timestamptz, now()));

-- name: run_get
-- Returns the run row, or nothing.
SELECT run_id, kind, selection, config, tags, requested_by, status, created_at, finished_at
FROM flowstone_runs
WHERE run_id = %(run_id)s;

-- name: run_list
-- Returns the newest runs first.
SELECT run_id, kind, selection, config, tags, requested_by, status, created_at, finished_at
FROM flowstone_runs
ORDER BY created_at DESC, run_id
LIMIT %(limit)s;

-- name: run_finish
-- Recomputes a run's status from its steps; returns the run row when it changed.
WITH counts AS (
    SELECT count(*) FILTER (WHERE status IN ('pending', 'queued', 'running')) AS active,
           count(*) FILTER (WHERE status = 'waiting_approval')                AS waiting,
           count(*) FILTER (WHERE status IN ('failed', 'rejected', 'skipped'))  AS bad,
           count(*) FILTER (WHERE status = 'cancelled')                       AS cancelled
    FROM flowstone_materializations
    WHERE run_id = %(run_id)s
), next AS (
    SELECT CASE
               WHEN active > 0 THEN 'running'
               WHEN waiting > 0 THEN 'waiting_approval'
               WHEN cancelled > 0 THEN 'cancelled'
               WHEN bad > 0 THEN 'failed'
               ELSE 'succeeded'
           END AS status
    FROM counts
), changed AS (
    UPDATE flowstone_runs AS r
    SET status      = next.status,
        finished_at = CASE WHEN next.status IN ('succeeded', 'failed', 'cancelled')
                           THEN coalesce(%(now)s::timestamptz, now()) END
    FROM next
    WHERE r.run_id = %(run_id)s
      AND r.status NOT IN ('succeeded', 'failed', 'cancelled')
      AND r.status IS DISTINCT FROM next.status
    RETURNING r.*
), audit AS (
    INSERT INTO flowstone_audit_log (event, actor, run_id, details, at)
    SELECT 'run.finished', %(actor)s, changed.run_id, jsonb_build_object('status', changed.status),
           coalesce(%(now)s::timestamptz, now())
    FROM changed
    WHERE changed.status IN ('succeeded', 'failed', 'cancelled')
)
SELECT run_id, kind, selection, config, tags, requested_by, status, created_at, finished_at
FROM changed;
