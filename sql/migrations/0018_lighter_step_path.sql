-- 0018_lighter_step_path: less server and client work per step, same rules (no table is rewritten;
-- workers may keep running: CREATE OR REPLACE FUNCTION and CREATE FUNCTION take no lock a worker
-- waits on for long, and each statement uses the new bodies from its next call).
--
-- 1. The status triggers return at once when their statement changed nothing they keep. A
--    statement-level AFTER INSERT trigger fires even when the INSERT inserts no row. Measured with
--    auto_explain on a chain of trivial assets: the claim (an UPDATE of the steps it takes, beside
--    an INSERT ... ON CONFLICT DO NOTHING of a step that has no row yet, which inserts nothing
--    unless the step is new) spent about 0.2 ms of its 0.4 ms in flowstone_partition_status_inserted:
--    an empty INSERT ... ON CONFLICT DO UPDATE into flowstone_partition_status, which fired the
--    counting triggers of 0017 for its INSERT and for its UPDATE, each aggregating empty transition
--    tables and running an empty upsert. Same rules as 0014, 0016 and 0017; only the exits are new:
--      * flowstone_partition_status_inserted: nothing inserted, nothing to do;
--      * flowstone_asset_status_counted: nothing to count when no row entered or left, or (UPDATE)
--        when the statement's rows hold the same (asset, status, has a success) as before, as a
--        multiset: the counts it would add sum to zero.
-- 2. flowstone_run_finish(run, actor, at, commit_async): the run's lock, its status recomputed
--    and (commit_async) the transaction's commit mode, in one call instead of three statements
--    (run_lock, run_finish, materialization_commit_mode). Each transaction that ends, waits or
--    cancels a step calls it; a step's success calls it with commit_async (ADR 0013).

CREATE OR REPLACE FUNCTION flowstone_partition_status_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM inserted) THEN
        RETURN NULL;  -- an INSERT that inserted nothing (the claim of an existing step)
    END IF;
    INSERT INTO flowstone_partition_status AS p
        (asset, partition_key, newest_id, status, finished_at, last_success_at)
    SELECT DISTINCT ON (n.asset, n.partition_key) n.asset, n.partition_key, n.id, n.status,
           n.finished_at,
           CASE WHEN n.status = 'succeeded' THEN n.finished_at END
    FROM inserted AS n
    ORDER BY n.asset, n.partition_key, n.id DESC
    ON CONFLICT (asset, partition_key) DO UPDATE
        SET newest_id = excluded.newest_id,
            status = excluded.status,
            finished_at = excluded.finished_at,
            last_success_at = greatest(p.last_success_at, excluded.last_success_at)
        WHERE excluded.newest_id > p.newest_id;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION flowstone_asset_status_counted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- +1 for each row as it is now, -1 for each as it was (transition tables of this statement).
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM new_rows) THEN
            RETURN NULL;
        END IF;
        PERFORM flowstone_asset_status_add(array_agg(n.asset), array_agg(n.status),
                                           array_agg(1), array_agg((n.last_success_at IS NOT NULL)::int))
        FROM new_rows AS n;
    ELSIF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT FROM old_rows) THEN
            RETURN NULL;
        END IF;
        PERFORM flowstone_asset_status_add(array_agg(o.asset), array_agg(o.status),
                                           array_agg(-1), array_agg((o.last_success_at IS NOT NULL)::int))
        FROM old_rows AS o;
    ELSE
        -- An UPDATE keeps the number of rows: when the rows as they are hold what the rows as
        -- they were held (a finish time moved, a newer step of the same status), nothing moves.
        IF NOT EXISTS (SELECT n.asset, n.status, n.last_success_at IS NOT NULL FROM new_rows AS n
                       EXCEPT ALL
                       SELECT o.asset, o.status, o.last_success_at IS NOT NULL FROM old_rows AS o) THEN
            RETURN NULL;
        END IF;
        PERFORM flowstone_asset_status_add(array_agg(d.asset), array_agg(d.status),
                                           array_agg(d.sign), array_agg(d.succeeded))
        FROM (SELECT n.asset, n.status, 1 AS sign, (n.last_success_at IS NOT NULL)::int AS succeeded
              FROM new_rows AS n
              UNION ALL
              SELECT o.asset, o.status, -1, (o.last_success_at IS NOT NULL)::int
              FROM old_rows AS o) AS d;
    END IF;
    RETURN NULL;
END;
$$;

-- The one place a run's status is computed. The run's row is locked first, in a statement of its
-- own: a VOLATILE function's statements each take a new snapshot (READ COMMITTED), so the status
-- computed next sees every step that a concurrent transaction committed while this one waited,
-- and of two last steps ending together the second always finishes the run. Each test is an index
-- probe on (run_id, status): the cost does not grow with the number of steps. A skip that
-- memoization recorded (memoized_from) is a success, not a failure. Returns the run's row when its
-- status changed. With commit_async, the calling transaction then commits asynchronously unless the
-- run ended or waits for an approval in it (ADR 0013: that commit, durable, also flushes every
-- asynchronous success of the run before it).
CREATE FUNCTION flowstone_run_finish(p_run_id uuid, p_actor text, p_now timestamptz,
                                     p_commit_async boolean) RETURNS SETOF flowstone_runs
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM flowstone_runs WHERE run_id = p_run_id FOR UPDATE;
    RETURN QUERY
    WITH probe AS (
        SELECT EXISTS (SELECT 1 FROM flowstone_materializations AS m
                       WHERE m.run_id = p_run_id AND m.status IN ('queued', 'running'))    AS active,
               EXISTS (SELECT 1 FROM flowstone_materializations AS m
                       WHERE m.run_id = p_run_id AND m.status = 'pending')               AS pending,
               EXISTS (SELECT 1 FROM flowstone_materializations AS m
                       WHERE m.run_id = p_run_id AND m.status = 'waiting_approval')      AS waiting,
               EXISTS (SELECT 1 FROM flowstone_materializations AS m
                       WHERE m.run_id = p_run_id AND m.status = 'cancelled')             AS cancelled,
               EXISTS (SELECT 1 FROM flowstone_materializations AS m
                       WHERE m.run_id = p_run_id AND m.status IN ('failed', 'rejected', 'skipped')
                         AND m.memoized_from IS NULL)                                  AS bad
    ), next AS (
        SELECT CASE
                   WHEN active THEN 'running'
                   -- nothing queued or running: pending steps can only be waiting behind the gate
                   WHEN waiting THEN 'waiting_approval'
                   WHEN pending THEN 'running'
                   WHEN cancelled THEN 'cancelled'
                   WHEN bad THEN 'failed'
                   ELSE 'succeeded'
               END AS status
        FROM probe
    ), changed AS (
        UPDATE flowstone_runs AS r
        SET status      = next.status,
            finished_at = CASE WHEN next.status IN ('succeeded', 'failed', 'cancelled')
                               THEN coalesce(p_now, now()) END
        FROM next
        WHERE r.run_id = p_run_id
          AND r.status NOT IN ('succeeded', 'failed', 'cancelled')
          AND r.status IS DISTINCT FROM next.status
        RETURNING r.*
    ), audit AS (
        INSERT INTO flowstone_audit_log (event, actor, run_id, details, at)
        SELECT 'run.finished', p_actor, c.run_id, jsonb_build_object('status', c.status),
               coalesce(p_now, now())
        FROM changed AS c
        WHERE c.status IN ('succeeded', 'failed', 'cancelled')
    )
    SELECT c.* FROM changed AS c;
    IF p_commit_async THEN
        -- (Not pg_settings: that view builds every setting, about a millisecond.)
        PERFORM set_config('synchronous_commit', 'off', true)
        FROM flowstone_runs AS r
        WHERE r.run_id = p_run_id
          AND r.status NOT IN ('succeeded', 'failed', 'cancelled', 'waiting_approval');
    END IF;
END;
$$;
