-- 0008_pools: concurrency pools enforced by Postgres (apply with `flowstone db upgrade`).
--
-- A step of an asset with pools holds one slot of each (per pool key) while it runs. Slots are
-- rows of flowstone_pool_holders, taken in one transaction after the claim under a transaction
-- advisory lock per (pool, key); a step that finds a pool full stays `queued` without a job and
-- waits in flowstone_pool_waiters. A trigger releases a step's slots in the very transaction that
-- moves it out of `running` (success, failure, retry, cancel, the recovery sweep: every path), and
-- gives each freed slot to the next waiter by deferring its job there: no polling, no lost wake-up.

-- The limit of each pool (per key): the one in the code, unless an operator set another. A pool
-- with a period is a rate limit: at most `limit` starts per key in any `period_s` seconds.
CREATE TABLE flowstone_pools (
    pool           text PRIMARY KEY CHECK (pool ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,63}$'),
    code_limit     integer NOT NULL CHECK (code_limit >= 0),
    limit_override integer CHECK (limit_override >= 0),
    period_s       double precision CHECK (period_s > 0),
    set_by         text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The starts of rate-limited steps inside the current window (older ones are deleted as they
-- leave it).
CREATE TABLE flowstone_pool_starts (
    pool       text NOT NULL REFERENCES flowstone_pools (pool),
    pool_key   text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL
);
CREATE INDEX flowstone_pool_starts_window_idx ON flowstone_pool_starts (pool, pool_key, started_at);

-- Marks the steps that took slots, so that the release trigger only fires for them.
ALTER TABLE flowstone_materializations ADD COLUMN pooled boolean NOT NULL DEFAULT false;

CREATE TABLE flowstone_pool_holders (
    materialization_id bigint NOT NULL REFERENCES flowstone_materializations (id) ON DELETE CASCADE,
    pool               text NOT NULL REFERENCES flowstone_pools (pool),
    pool_key           text NOT NULL DEFAULT '',
    acquired_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (materialization_id, pool)
);
CREATE INDEX flowstone_pool_holders_key_idx ON flowstone_pool_holders (pool, pool_key);

CREATE TABLE flowstone_pool_waiters (
    materialization_id bigint PRIMARY KEY REFERENCES flowstone_materializations (id) ON DELETE CASCADE,
    pool               text NOT NULL REFERENCES flowstone_pools (pool),
    pool_key           text NOT NULL DEFAULT '',
    queue              text NOT NULL,
    priority           integer NOT NULL DEFAULT 0,
    since              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flowstone_pool_waiters_next_idx
    ON flowstone_pool_waiters (pool, pool_key, priority DESC, since, materialization_id);

-- The serialization point of one (pool, key): acquiring, releasing and waking take it first.
CREATE FUNCTION flowstone_pool_lock(p_pool text, p_key text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('flowstone_pool:' || p_pool || chr(31) || p_key, 0));
$$;

-- Gives the free slots of (pool, key) to the next waiters, best priority first then oldest: each
-- gets its step job deferred (the same three-key args as every step job). Waiters whose step is no
-- longer waiting (cancelled meanwhile) are dropped. Returns how many were woken. The caller holds
-- flowstone_pool_lock(p_pool, p_key).
CREATE FUNCTION flowstone_pool_wake(p_pool text, p_key text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    free   integer;
    woken  integer := 0;
    w      record;
    new_job bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM flowstone_pool_waiters AS x WHERE x.pool = p_pool AND x.pool_key = p_key) THEN
        RETURN 0;  -- the common case: nobody waits, nothing to count
    END IF;
    SELECT coalesce(p.limit_override, p.code_limit)
           - (SELECT count(*) FROM flowstone_pool_holders AS h WHERE h.pool = p_pool AND h.pool_key = p_key)
      INTO free
      FROM flowstone_pools AS p WHERE p.pool = p_pool;
    WHILE coalesce(free, 0) > 0 LOOP
        DELETE FROM flowstone_pool_waiters AS pw
        WHERE pw.materialization_id = (
            SELECT x.materialization_id FROM flowstone_pool_waiters AS x
            WHERE x.pool = p_pool AND x.pool_key = p_key
            ORDER BY x.priority DESC, x.since, x.materialization_id
            LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING pw.* INTO w;
        EXIT WHEN NOT FOUND;
        PERFORM 1 FROM flowstone_materializations AS m
        WHERE m.id = w.materialization_id AND m.status = 'queued' AND m.job_id IS NULL;
        CONTINUE WHEN NOT FOUND;  -- no longer waiting: its slot goes to the next one
        SELECT ids[1] INTO new_job FROM (
            SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(
                w.queue, 'flowstone:run_step', w.priority, NULL, NULL,
                jsonb_build_object('run_id', m.run_id::text, 'asset', m.asset, 'partition', m.partition_key),
                NULL)]::procrastinate_job_to_defer_v1[]) AS ids
            FROM flowstone_materializations AS m WHERE m.id = w.materialization_id) AS d;
        UPDATE flowstone_materializations
        SET job_id = new_job, queued_at = now(), batch_key = partition_key
        WHERE id = w.materialization_id;
        free := free - 1;
        woken := woken + 1;
    END LOOP;
    RETURN woken;
END;
$$;

-- Releases the slots of a step leaving `running` and wakes the next waiters, in the same
-- transaction as the step's new status.
CREATE FUNCTION flowstone_pool_release() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    h record;
BEGIN
    FOR h IN SELECT pool, pool_key FROM flowstone_pool_holders
             WHERE materialization_id = NEW.id ORDER BY pool, pool_key LOOP
        PERFORM flowstone_pool_lock(h.pool, h.pool_key);
        DELETE FROM flowstone_pool_holders WHERE materialization_id = NEW.id AND pool = h.pool;
        PERFORM flowstone_pool_wake(h.pool, h.pool_key);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER flowstone_pool_release
    AFTER UPDATE OF status ON flowstone_materializations
    FOR EACH ROW
    WHEN (OLD.pooled AND OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION flowstone_pool_release();

-- Takes a slot of each (pool, key) for a claimed step, or, when one is full, returns that pool
-- and (p_wait, queued runs) makes the step wait for it: back to `queued`, the claim's attempt
-- undone, and either a row in flowstone_pool_waiters without a job (a concurrency pool) or a new
-- job scheduled when the rate limit's window frees (a rate limit). In-process runs (not p_wait)
-- change nothing and ask again. The pairs come sorted, so that two steps lock them in the same
-- order. A step that holds its slots already (a redelivered job) keeps them.
CREATE FUNCTION flowstone_pool_acquire(p_id bigint, p_pools text[], p_keys text[], p_queue text,
                                       p_priority integer, p_wait boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    i       integer;
    lim     integer;
    period  double precision;
    held    integer;
    oldest  timestamptz;
    new_job bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_pools, 1), 0) LOOP
        PERFORM flowstone_pool_lock(p_pools[i], p_keys[i]);
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(p_pools, 1), 0) LOOP
        SELECT coalesce(limit_override, code_limit), period_s INTO lim, period
        FROM flowstone_pools WHERE pool = p_pools[i];
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown pool %', p_pools[i] USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF period IS NOT NULL THEN  -- a rate limit: starts in the window
            DELETE FROM flowstone_pool_starts
            WHERE pool = p_pools[i] AND pool_key = p_keys[i]
              AND started_at <= clock_timestamp() - make_interval(secs => period);
            SELECT count(*), min(started_at) INTO held, oldest FROM flowstone_pool_starts
            WHERE pool = p_pools[i] AND pool_key = p_keys[i];
            IF held >= lim THEN
                IF NOT p_wait THEN
                    RETURN p_pools[i];
                END IF;
                SELECT ids[1] INTO new_job FROM (
                    SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(
                        p_queue, 'flowstone:run_step', p_priority, NULL, NULL,
                        jsonb_build_object('run_id', m.run_id::text, 'asset', m.asset, 'partition', m.partition_key),
                        coalesce(oldest, clock_timestamp()) + make_interval(secs => period))]::procrastinate_job_to_defer_v1[]) AS ids
                    FROM flowstone_materializations AS m WHERE m.id = p_id) AS d;
                UPDATE flowstone_materializations
                SET status = 'queued', job_id = new_job, attempt = greatest(attempt - 1, 0),
                    started_at = NULL, batch_key = partition_key
                WHERE id = p_id AND status = 'running';
                RETURN p_pools[i];
            END IF;
            CONTINUE;
        END IF;
        SELECT count(*) INTO held FROM flowstone_pool_holders
        WHERE pool = p_pools[i] AND pool_key = p_keys[i] AND materialization_id <> p_id;
        IF held >= lim AND NOT EXISTS (SELECT 1 FROM flowstone_pool_holders
                                       WHERE materialization_id = p_id AND pool = p_pools[i]) THEN
            IF NOT p_wait THEN
                RETURN p_pools[i];
            END IF;
            UPDATE flowstone_materializations
            SET status = 'queued', job_id = NULL, attempt = greatest(attempt - 1, 0), started_at = NULL,
                pooled = true
            WHERE id = p_id AND status = 'running';
            DELETE FROM flowstone_pool_holders WHERE materialization_id = p_id;
            INSERT INTO flowstone_pool_waiters (materialization_id, pool, pool_key, queue, priority)
            VALUES (p_id, p_pools[i], p_keys[i], p_queue, p_priority)
            ON CONFLICT (materialization_id) DO UPDATE
            SET pool = excluded.pool, pool_key = excluded.pool_key;
            RETURN p_pools[i];
        END IF;
    END LOOP;
    INSERT INTO flowstone_pool_starts (pool, pool_key, started_at)
    SELECT u.pool, u.pool_key, clock_timestamp()
    FROM unnest(p_pools, p_keys) AS u(pool, pool_key)
    JOIN flowstone_pools AS p ON p.pool = u.pool AND p.period_s IS NOT NULL;
    INSERT INTO flowstone_pool_holders (materialization_id, pool, pool_key)
    SELECT p_id, u.pool, u.pool_key
    FROM unnest(p_pools, p_keys) AS u(pool, pool_key)
    JOIN flowstone_pools AS p ON p.pool = u.pool AND p.period_s IS NULL
    ON CONFLICT (materialization_id, pool) DO NOTHING;
    IF FOUND THEN
        UPDATE flowstone_materializations SET pooled = true WHERE id = p_id AND NOT pooled;
    END IF;
    RETURN NULL;
END;
$$;

-- Wakes the waiters of every (pool, key) that has free slots (after a limit was raised, and as
-- the recovery sweep's safety net); returns how many were woken.
CREATE FUNCTION flowstone_pool_wake_all() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    k     record;
    woken integer := 0;
BEGIN
    FOR k IN SELECT DISTINCT pool, pool_key FROM flowstone_pool_waiters ORDER BY pool, pool_key LOOP
        PERFORM flowstone_pool_lock(k.pool, k.pool_key);
        woken := woken + flowstone_pool_wake(k.pool, k.pool_key);
    END LOOP;
    RETURN woken;
END;
$$;
