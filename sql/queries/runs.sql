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

-- name: run_lock
-- Locks a run's row until the end of the transaction: the last steps of a run that finish at the
-- same time then compute the run's status one after the other, each seeing the others' commits.
SELECT run_id FROM flowstone_runs WHERE run_id = %(run_id)s FOR NO KEY UPDATE;

-- name: run_finish
-- Locks the run's row, recomputes its status from its steps (and audits run.finished), and with
-- commit_async sets the calling transaction's commit mode (ADR 0013): flowstone_run_finish,
-- migration 0018, the one place a run's status is computed. Returns the run row when its status
-- changed. Called by every transaction that ends, waits or cancels a step; the periodic sweep
-- (run_unfinished_claim) finishes any run left behind.
SELECT * FROM flowstone_run_finish(%(run_id)s::uuid, %(actor)s::text, %(now)s::timestamptz,
                                   %(commit_async)s::boolean);

-- name: run_unfinished_claim
-- Claims (FOR NO KEY UPDATE SKIP LOCKED, I18: the lock flowstone_run_finish takes) runs that are not
-- terminal but have no active step left
-- (two last steps that finished at the same instant); returns their ids.
SELECT r.run_id
FROM flowstone_runs AS r
WHERE r.status IN ('queued', 'running')
  AND NOT EXISTS (SELECT 1 FROM flowstone_materializations AS m
                  WHERE m.run_id = r.run_id AND m.status IN ('pending', 'queued', 'running'))
ORDER BY r.created_at
LIMIT %(limit)s
FOR NO KEY UPDATE OF r SKIP LOCKED;

-- name: run_step_counts
-- Returns (status, count) of the steps of a run.
SELECT status, count(*) AS n
FROM flowstone_materializations
WHERE run_id = %(run_id)s
GROUP BY status
ORDER BY status;

-- name: run_reopen
-- A retried run becomes active again (queued runs queued, in-process runs running); returns it.
UPDATE flowstone_runs
SET status = %(status)s, finished_at = NULL
WHERE run_id = %(run_id)s
RETURNING run_id, kind, selection, config, tags, requested_by, status, created_at, finished_at;

-- name: run_abandoned_claim
-- Claims (FOR UPDATE SKIP LOCKED, I18) in-process runs still running whose owner process is gone:
-- nobody holds their advisory lock (the process holds it on its own connection while it runs the
-- steps). Returns their ids.
SELECT r.run_id
FROM flowstone_runs AS r
WHERE r.status = 'running'
  AND (r.kind = 'materialize' OR (r.kind = 'backfill' AND r.tags ->> 'backfill' = 'sync'))
  AND r.created_at < coalesce(%(now)s::timestamptz, now()) - make_interval(secs => %(grace_s)s::float8)
  AND pg_try_advisory_xact_lock(hashtextextended('flowstone_run:' || r.run_id::text, 0))
ORDER BY r.created_at
LIMIT %(limit)s
FOR NO KEY UPDATE OF r SKIP LOCKED;

-- name: run_owner_lock
-- Tries the session-level advisory lock an in-process run's process holds on its own connection
-- while it runs the steps (run_abandoned_claim takes it to see that the process is gone); returns
-- whether it was taken (false: another process runs the run).
SELECT pg_try_advisory_lock(hashtextextended('flowstone_run:' || %(run_id)s::text, 0)) AS locked;

-- name: run_priority
-- Returns the priority a run was submitted with (0 when none).
SELECT coalesce((config ->> 'priority')::integer, 0) AS priority
FROM flowstone_runs
WHERE run_id = %(run_id)s;
