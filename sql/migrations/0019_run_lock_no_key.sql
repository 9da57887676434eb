-- 0019_run_lock_no_key: flowstone_run_finish locks the run's row FOR NO KEY UPDATE, not FOR UPDATE,
-- and probes the run's steps only as far as the status needs.
-- (-- It also does less in the common case, a step ending while others of the run are still active:
-- the run's status comes with its lock (a terminal run returns at once); the probes of the run's
-- steps are a CASE, evaluated in order and only as far as needed (one index probe while a step is
-- queued or running, instead of five); the row is updated only when its status changes; the commit
-- mode follows from the status computed, without reading the run again. Same rules, same order of
-- tests, same result as 0018.

CREATE OR REPLACE FUNCTION flowstone_run_finish(p_run_id uuid, p_actor text, p_now timestamptz,
                                                p_commit_async boolean) RETURNS SETOF flowstone_runs
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_next   text;
BEGIN
    -- The lock in a statement of its own; after a wait it returns the row as the other committed it.
    SELECT r.status INTO v_status FROM flowstone_runs AS r WHERE r.run_id = p_run_id FOR NO KEY UPDATE;
    IF NOT FOUND OR v_status IN ('succeeded', 'failed', 'cancelled') THEN
        RETURN;  -- no run, or it ended: nothing changes, and the commit stays durable
    END IF;
    -- A new statement, so a new snapshot: it sees every step committed while this one waited.
    SELECT CASE
               WHEN EXISTS (SELECT 1 FROM flowstone_materializations AS m
                            WHERE m.run_id = p_run_id AND m.status IN ('queued', 'running'))
                   THEN 'running'
               -- nothing queued or running: pending steps can only be waiting behind the gate
               WHEN EXISTS (SELECT 1 FROM flowstone_materializations AS m
                            WHERE m.run_id = p_run_id AND m.status = 'waiting_approval')
                   THEN 'waiting_approval'
               WHEN EXISTS (SELECT 1 FROM flowstone_materializations AS m
                            WHERE m.run_id = p_run_id AND m.status = 'pending')
                   THEN 'running'
               WHEN EXISTS (SELECT 1 FROM flowstone_materializations AS m
                            WHERE m.run_id = p_run_id AND m.status = 'cancelled')
                   THEN 'cancelled'
               WHEN EXISTS (SELECT 1 FROM flowstone_materializations AS m
                            WHERE m.run_id = p_run_id AND m.status IN ('failed', 'rejected', 'skipped')
                              AND m.memoized_from IS NULL)
                   THEN 'failed'
               ELSE 'succeeded'
           END
    INTO v_next;
    IF v_next IS DISTINCT FROM v_status THEN
        RETURN QUERY
        WITH changed AS (
            UPDATE flowstone_runs AS r
            SET status      = v_next,
                finished_at = CASE WHEN v_next IN ('succeeded', 'failed', 'cancelled')
                                   THEN coalesce(p_now, now()) END
            WHERE r.run_id = p_run_id
            RETURNING r.*
        ), audit AS (
            INSERT INTO flowstone_audit_log (event, actor, run_id, details, at)
            SELECT 'run.finished', p_actor, c.run_id, jsonb_build_object('status', c.status),
                   coalesce(p_now, now())
            FROM changed AS c
            WHERE c.status IN ('succeeded', 'failed', 'cancelled')
        )
        SELECT c.* FROM changed AS c;
    END IF;
    IF p_commit_async AND v_next NOT IN ('succeeded', 'failed', 'cancelled', 'waiting_approval') THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
END;
$$;
