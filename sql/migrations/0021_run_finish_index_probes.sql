-- 0021_run_finish_index_probes: flowstone_run_finish (0018, 0019) reads which statuses a run's
-- steps are in with one probe of flowstone_materializations_run_status_idx (run_id, status) per
-- status present, from the lowest up (a loose index scan whose plan no statistics can change),
-- instead of an EXISTS per group of statuses. Every step's end calls it. The EXISTS left the plan
-- to statistics, and a generic plan (what a worker's session uses after five calls) built from
-- statistics that big runs dominate scanned the queued and running steps of every run through
-- flowstone_materializations_active_job_idx while the run went on, and the whole table for
-- `cancelled`, common elsewhere, at the run's last step: measured with 20,000 queued steps of a
-- backfill and 30,000 cancelled ones beside a run of two steps, 720 shared buffers per call
-- against a few (tests/integration/test_run_finish_plans.py); in `make bench`, 11.5 ms per call
-- once a 100,000-step run had been cancelled. Same rules, same order of tests, same result as 0019.
-- (CREATE OR REPLACE FUNCTION: no table lock beyond the catalog's; running workers take the new
-- body with their next call.)

CREATE OR REPLACE FUNCTION flowstone_run_finish(p_run_id uuid, p_actor text, p_now timestamptz,
                                                p_commit_async boolean) RETURNS SETOF flowstone_runs
LANGUAGE plpgsql AS $$
DECLARE
    v_status  text;
    v_next    text;
    v_present text[];
BEGIN
    -- The lock in a statement of its own; after a wait it returns the row as the other committed it.
    SELECT r.status INTO v_status FROM flowstone_runs AS r WHERE r.run_id = p_run_id FOR NO KEY UPDATE;
    IF NOT FOUND OR v_status IN ('succeeded', 'failed', 'cancelled') THEN
        RETURN;  -- no run, or it ended: nothing changes, and the commit stays durable
    END IF;
    -- A new statement, so a new snapshot: it sees every step committed while this one waited.
    -- The statuses the run's steps are in, one probe of the (run_id, status) index each, from the
    -- lowest up (a loose index scan): a step ending pays for the few statuses of its own run,
    -- whatever the other runs hold. (An EXISTS per status left the plan to statistics: a generic
    -- plan scanned the queued and running steps of every run, or the whole table for a status
    -- common elsewhere; migration 0021.)
    WITH RECURSIVE present AS (
        (SELECT m.status FROM flowstone_materializations AS m
         WHERE m.run_id = p_run_id
         ORDER BY m.status
         LIMIT 1)
        UNION ALL
        SELECT (SELECT m.status FROM flowstone_materializations AS m
                WHERE m.run_id = p_run_id AND m.status > p.status
                ORDER BY m.status
                LIMIT 1)
        FROM present AS p
        WHERE p.status IS NOT NULL
    )
    SELECT coalesce(array_agg(p.status), '{}') INTO v_present FROM present AS p WHERE p.status IS NOT NULL;
    v_next := CASE
        WHEN v_present && ARRAY['queued', 'running'] THEN 'running'
        -- nothing queued or running: pending steps can only be waiting behind the gate
        WHEN 'waiting_approval' = ANY (v_present) THEN 'waiting_approval'
        WHEN 'pending' = ANY (v_present) THEN 'running'
        WHEN 'cancelled' = ANY (v_present) THEN 'cancelled'
        WHEN v_present && ARRAY['failed', 'rejected'] THEN 'failed'
        -- a step memoization skipped counts as a success; any other skip fails the run
        WHEN 'skipped' = ANY (v_present)
             AND EXISTS (SELECT 1 FROM flowstone_materializations AS m
                         WHERE m.run_id = p_run_id AND m.status = 'skipped' AND m.memoized_from IS NULL)
            THEN 'failed'
        ELSE 'succeeded'
    END;
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
