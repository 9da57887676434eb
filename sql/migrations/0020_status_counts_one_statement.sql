-- 0020_status_counts_one_statement: the counting trigger of flowstone_partition_status (0017) adds
-- its counts in one statement of its own, instead of three (a test of whether anything moved, the
-- aggregation into arrays, then a call of flowstone_asset_status_add that unnested them again into
-- its INSERT). Same rules, same counts: +1 for each row as it is now, -1 for each as it was, summed
-- per (asset, status) into this backend's shard; a group whose sums are both zero is left out (an
-- UPDATE that moved nothing writes nothing). Measured on PostgreSQL 15, one step's success
-- statement: about 20 µs less of its 225 µs. (CREATE OR REPLACE FUNCTION: no table lock beyond
-- the catalog's, no scan; workers may keep running, each statement uses the new body.)
-- flowstone_asset_status_add stays (nothing in FlowStone calls it any more).

CREATE OR REPLACE FUNCTION flowstone_asset_status_counted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO flowstone_asset_status_counts AS c
            (asset, status, shard, partitions, ever_succeeded)
        SELECT n.asset, n.status, pg_backend_pid(), count(*), count(n.last_success_at)
        FROM new_rows AS n
        GROUP BY n.asset, n.status
        ORDER BY n.asset, n.status
        ON CONFLICT (asset, status, shard) DO UPDATE
            SET partitions = c.partitions + excluded.partitions,
                ever_succeeded = c.ever_succeeded + excluded.ever_succeeded;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO flowstone_asset_status_counts AS c
            (asset, status, shard, partitions, ever_succeeded)
        SELECT o.asset, o.status, pg_backend_pid(), -count(*), -count(o.last_success_at)
        FROM old_rows AS o
        GROUP BY o.asset, o.status
        ORDER BY o.asset, o.status
        ON CONFLICT (asset, status, shard) DO UPDATE
            SET partitions = c.partitions + excluded.partitions,
                ever_succeeded = c.ever_succeeded + excluded.ever_succeeded;
    ELSE
        INSERT INTO flowstone_asset_status_counts AS c
            (asset, status, shard, partitions, ever_succeeded)
        SELECT d.asset, d.status, pg_backend_pid(), sum(d.sign), sum(d.sign * d.succeeded)
        FROM (SELECT n.asset, n.status, 1 AS sign, (n.last_success_at IS NOT NULL)::int AS succeeded
              FROM new_rows AS n
              UNION ALL
              SELECT o.asset, o.status, -1, (o.last_success_at IS NOT NULL)::int
              FROM old_rows AS o) AS d
        GROUP BY d.asset, d.status
        HAVING sum(d.sign) <> 0 OR sum(d.sign * d.succeeded) <> 0
        ORDER BY d.asset, d.status
        ON CONFLICT (asset, status, shard) DO UPDATE
            SET partitions = c.partitions + excluded.partitions,
                ever_succeeded = c.ever_succeeded + excluded.ever_succeeded;
    END IF;
    RETURN NULL;
END;
$$;
