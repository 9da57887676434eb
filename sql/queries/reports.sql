-- name: report_runs
-- Returns the newest runs first with their steps counted by status (a JSON object), filtered by
-- status, by an asset they have a step of, and by creation time; each filter is off when NULL.
-- The runs are chosen (and limited) first, so only their steps are counted.
SELECT r.run_id, r.kind, r.selection, r.config, r.tags, r.requested_by, r.status, r.created_at,
       r.finished_at, coalesce(c.counts, '{}'::jsonb) AS counts
FROM (SELECT *
      FROM flowstone_runs AS x
      WHERE (%(status)s::text IS NULL OR x.status = %(status)s::text)
        AND (%(since)s::timestamptz IS NULL OR x.created_at >= %(since)s::timestamptz)
        AND (%(asset)s::text IS NULL
             OR %(asset)s::text = ANY(x.selection)
             OR EXISTS (SELECT 1 FROM flowstone_materializations AS a
                        WHERE a.run_id = x.run_id AND a.asset = %(asset)s::text))
      ORDER BY x.created_at DESC, x.run_id
      LIMIT %(limit)s) AS r
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(s.status, s.n) AS counts
    FROM (SELECT m.status, count(*) AS n
          FROM flowstone_materializations AS m
          WHERE m.run_id = r.run_id
          GROUP BY m.status) AS s
) AS c ON true
ORDER BY r.created_at DESC, r.run_id;

-- name: report_assets
-- Returns (for one asset, or every asset when `asset` is NULL) one row per asset and status of the
-- newest step of each of its partitions: how many partitions are in that status, how many of the
-- asset's partitions have ever succeeded, and the asset's newest finish and latest success.
-- The counts come from flowstone_asset_status_counts (kept by a trigger on
-- flowstone_partition_status, migration 0017: a few rows per asset and live session, summed), so
-- the cost follows the number of assets, not their partitions nor the steps ever recorded.
-- Those counts are exact for ended statuses. An unfinished partition's current status (queued,
-- running, ...) is read from its newest step by primary key, found through the partial index of
-- unfinished partitions (the LIMIT keeps that a probe per partition, never a join over all
-- steps). The newest finish and latest success of each asset are backward probes of an index.
WITH counted AS (
    SELECT c.asset, c.status, sum(c.partitions)::bigint AS partitions,
           sum(c.ever_succeeded)::bigint AS ever_succeeded
    FROM flowstone_asset_status_counts AS c
    WHERE %(asset)s::text IS NULL OR c.asset = %(asset)s::text
    GROUP BY c.asset, c.status
    HAVING sum(c.partitions) <> 0
), unfinished AS (
    SELECT p.asset, s.status, count(*) AS partitions
    FROM flowstone_partition_status AS p
    CROSS JOIN LATERAL (SELECT m.status FROM flowstone_materializations AS m
                        WHERE m.id = p.newest_id LIMIT 1) AS s
    WHERE p.status IN ('pending', 'queued', 'running', 'waiting_approval')
      AND (%(asset)s::text IS NULL OR p.asset = %(asset)s::text)
    GROUP BY p.asset, s.status
), now_in AS (
    SELECT c.asset, c.status, c.partitions
    FROM counted AS c
    WHERE c.status NOT IN ('pending', 'queued', 'running', 'waiting_approval')
    UNION ALL
    SELECT u.asset, u.status, u.partitions FROM unfinished AS u
), totals AS (
    SELECT c.asset, sum(c.ever_succeeded)::bigint AS succeeded_partitions,
           (SELECT max(f.finished_at) FROM flowstone_partition_status AS f
            WHERE f.asset = c.asset) AS last_finished_at,
           (SELECT max(l.last_success_at) FROM flowstone_partition_status AS l
            WHERE l.asset = c.asset) AS last_success_at
    FROM counted AS c
    GROUP BY c.asset
)
SELECT n.asset, n.status, sum(n.partitions)::bigint AS partitions, t.last_finished_at,
       t.succeeded_partitions, t.last_success_at
FROM now_in AS n
JOIN totals AS t ON t.asset = n.asset
GROUP BY n.asset, n.status, t.last_finished_at, t.succeeded_partitions, t.last_success_at
ORDER BY n.asset, n.status;

-- name: report_partitions
-- Returns the newest step of every partition of one asset (optionally only those in one status),
-- with the finish time of the partition's latest success, in partition key order: the columns a
-- listing shows (its metadata only when asked for; decoding every step's JSON documents cost more
-- than the query). The partitions are walked one index probe each (a loose scan of the identity
-- key), and without a status filter the walk stops after `limit` partitions, so the cost follows
-- the partitions listed, not the versions stored.
WITH RECURSIVE keys (partition_key, n) AS (
    (SELECT k.partition_key, 1 FROM flowstone_materializations AS k
     WHERE k.asset = %(asset)s ORDER BY k.partition_key LIMIT 1)
    UNION ALL
    SELECT (SELECT k.partition_key FROM flowstone_materializations AS k
            WHERE k.asset = %(asset)s AND k.partition_key > keys.partition_key
            ORDER BY k.partition_key LIMIT 1),
           keys.n + 1
    FROM keys
    WHERE keys.partition_key IS NOT NULL
      AND (%(status)s::text IS NOT NULL OR keys.n < %(limit)s)
)
SELECT n.id, n.run_id, n.partition_key, n.status, n.duration_ms,
       CASE WHEN %(metadata)s THEN n.metadata END AS metadata, s.finished_at AS last_success_at
FROM keys
JOIN LATERAL (
    SELECT m.id, m.run_id, m.asset, m.partition_key, m.status, m.duration_ms, m.metadata
    FROM flowstone_materializations AS m
    WHERE m.asset = %(asset)s AND m.partition_key = keys.partition_key
    ORDER BY m.id DESC
    LIMIT 1
) AS n ON true
LEFT JOIN LATERAL (
    SELECT l.finished_at
    FROM flowstone_materializations AS l
    WHERE l.asset = n.asset AND l.partition_key = n.partition_key AND l.status = 'succeeded'
    ORDER BY l.finished_at DESC, l.id DESC
    LIMIT 1
) AS s ON true
WHERE keys.partition_key IS NOT NULL
  AND (%(status)s::text IS NULL OR n.status = %(status)s::text)
ORDER BY keys.partition_key
LIMIT %(limit)s;

-- name: report_workers
-- Returns how many Procrastinate workers sent a heartbeat within the given number of seconds.
SELECT count(*) AS alive
FROM procrastinate_workers
WHERE last_heartbeat > now() - make_interval(secs => %(within_s)s);

-- name: report_run_approvals
-- Returns the approvals of one run's steps, oldest request first.
SELECT *
FROM flowstone_approvals
WHERE run_id = %(run_id)s
ORDER BY requested_at, id;

-- name: report_partition_states
-- Returns, for every partition of one asset in key order, the status and code version of its newest
-- step and the finish time of its latest success: the web UI's partition grid (no metadata, no
-- outputs; both halves are index-only scans of flowstone_materializations_newest_idx and _latest_idx).
SELECT n.partition_key, n.status, n.code_version, s.finished_at AS last_success_at
FROM (SELECT DISTINCT ON (m.partition_key) m.partition_key, m.status, m.code_version
      FROM flowstone_materializations AS m
      WHERE m.asset = %(asset)s
      ORDER BY m.partition_key, m.id DESC) AS n
LEFT JOIN (SELECT DISTINCT ON (l.partition_key) l.partition_key, l.finished_at
           FROM flowstone_materializations AS l
           WHERE l.asset = %(asset)s AND l.status = 'succeeded'
           ORDER BY l.partition_key, l.finished_at DESC, l.id DESC) AS s
       ON s.partition_key = n.partition_key
ORDER BY n.partition_key;

-- name: report_run_steps
-- Returns at most `limit` steps of one run, those not succeeded first, then in id order (a run
-- page shows what needs attention without reading every step of a big backfill).
SELECT *
FROM flowstone_materializations
WHERE run_id = %(run_id)s
ORDER BY status = 'succeeded', id
LIMIT %(limit)s;

-- name: report_approvals_decided
-- Returns the approvals decided (approved, rejected, expired, withdrawn), newest decision first.
SELECT *
FROM flowstone_approvals
WHERE status <> 'pending'
ORDER BY decided_at DESC NULLS LAST, id DESC
LIMIT %(limit)s;
