-- name: pool_publish
-- Records the limits the code gives its pools (an operator's override stays).
INSERT INTO flowstone_pools AS p (pool, code_limit)
SELECT u.pool, u.code_limit
FROM unnest(%(pools)s::text[], %(limits)s::integer[]) AS u(pool, code_limit)
ON CONFLICT (pool) DO UPDATE
SET code_limit = excluded.code_limit, updated_at = now()
WHERE p.code_limit IS DISTINCT FROM excluded.code_limit;

-- name: pool_acquire
-- Takes the slots of one claimed step, or makes it wait; returns the pool it waits for (NULL when
-- it holds every slot). See flowstone_pool_acquire in migration 0008.
SELECT set_config('synchronous_commit', 'off', true) AS commit_mode,
       flowstone_pool_acquire(%(id)s, %(pools)s::text[], %(keys)s::text[], %(queue)s,
                              %(priority)s, %(wait)s) AS waits_for;

-- name: pool_set_limit
-- An operator's limit for a pool (NULL: back to the code's); returns the pool's row.
UPDATE flowstone_pools
SET limit_override = %(limit)s, set_by = %(by)s, updated_at = now()
WHERE pool = %(pool)s
RETURNING pool, code_limit, limit_override, set_by, updated_at;

-- name: pool_wake_all
-- Gives free slots to waiters (after a limit changed; the recovery sweep's safety net).
SELECT flowstone_pool_wake_all() AS woken;

-- name: pool_list
-- Every pool with its limit, and per key the holders and waiters.
SELECT p.pool, p.code_limit, p.limit_override, coalesce(p.limit_override, p.code_limit) AS pool_limit,
       p.set_by, p.updated_at,
       coalesce((SELECT jsonb_object_agg(k.pool_key, jsonb_build_object('held', k.held, 'waiting', k.waiting))
                 FROM (SELECT keys.pool_key,
                              (SELECT count(*) FROM flowstone_pool_holders AS h
                               WHERE h.pool = p.pool AND h.pool_key = keys.pool_key) AS held,
                              (SELECT count(*) FROM flowstone_pool_waiters AS w
                               WHERE w.pool = p.pool AND w.pool_key = keys.pool_key) AS waiting
                       FROM (SELECT pool_key FROM flowstone_pool_holders WHERE pool = p.pool
                             UNION
                             SELECT pool_key FROM flowstone_pool_waiters WHERE pool = p.pool) AS keys) AS k),
                '{}'::jsonb) AS by_key
FROM flowstone_pools AS p
ORDER BY p.pool;

-- name: pool_waiting_steps
-- The steps of one run that wait for a pool slot, with the pool and key.
SELECT w.materialization_id, w.pool, w.pool_key, w.since
FROM flowstone_pool_waiters AS w
JOIN flowstone_materializations AS m ON m.id = w.materialization_id
WHERE m.run_id = %(run_id)s
ORDER BY w.materialization_id;
