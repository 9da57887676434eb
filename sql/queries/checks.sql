-- name: check_result_insert
-- Records the asset checks of steps whose success committed in this transaction (the attempt
-- must be the succeeded one); a check recorded before for the materialization is kept.
INSERT INTO flowstone_check_results (materialization_id, asset, partition_key, run_id, check_name,
                                     passed, severity, blocking, description, metadata, error, at)
SELECT m.id, m.asset, m.partition_key, m.run_id, c.check_name, c.passed, c.severity, c.blocking,
       c.description, c.metadata, c.error, coalesce(%(now)s::timestamptz, now())
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(names)s::text[], %(passed)s::boolean[],
            %(severities)s::text[], %(blocking)s::boolean[], %(descriptions)s::text[],
            %(metadata)s::jsonb[], %(errors)s::jsonb[])
     AS c (materialization_id, attempt, check_name, passed, severity, blocking, description,
           metadata, error)
JOIN flowstone_materializations AS m
  ON m.id = c.materialization_id AND m.status = 'succeeded' AND m.attempt = c.attempt
ON CONFLICT ON CONSTRAINT flowstone_check_results_once DO NOTHING;

-- name: check_skip_downstream
-- A step that succeeded in this transaction but failed a blocking check: every not-yet-started
-- step reachable from it becomes skipped (instead of released). Returns the skipped rows' keys.
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
  AND EXISTS (SELECT 1 FROM flowstone_materializations AS s
              WHERE s.id = %(step_id)s AND s.status = 'succeeded' AND s.attempt = %(attempt)s)
RETURNING m.asset, m.partition_key;

-- name: check_results_list
-- Check results, newest first, optionally of one asset, one check and one run.
SELECT *
FROM flowstone_check_results
WHERE (%(asset)s::text IS NULL OR asset = %(asset)s)
  AND (%(check_name)s::text IS NULL OR check_name = %(check_name)s)
  AND (%(run_id)s::uuid IS NULL OR run_id = %(run_id)s)
ORDER BY at DESC, id DESC
LIMIT %(limit)s;

-- name: check_results_latest
-- The latest result of each check per asset and partition (optionally of one asset).
SELECT DISTINCT ON (asset, check_name, partition_key) *
FROM flowstone_check_results
WHERE (%(asset)s::text IS NULL OR asset = %(asset)s)
ORDER BY asset, check_name, partition_key, at DESC, id DESC;
