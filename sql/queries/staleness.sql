-- name: staleness_latest
-- For the latest succeeded materialization of each partition of the `report` assets: its code
-- version and the upstream assets whose latest materialization has another data version than the
-- one it read (through flowstone_lineage). `assets` holds the report assets and their upstream
-- assets. Grouped by (asset, code version, stale upstreams), with the partition keys and ids as
-- arrays: most partitions share one group, so thousands of partitions come back as a few rows.
WITH latest AS (
    SELECT DISTINCT ON (m.asset, m.partition_key)
           m.id, m.asset, m.partition_key, m.code_version, coalesce(m.data_version, m.id::text) AS version
    FROM flowstone_materializations AS m
    WHERE m.status = 'succeeded' AND m.asset = ANY(%(assets)s::text[])
    ORDER BY m.asset, m.partition_key, m.finished_at DESC, m.id DESC
), stale AS (
    SELECT l.id, array_agg(DISTINCT u.asset ORDER BY u.asset) AS upstreams
    FROM latest AS l
    JOIN flowstone_lineage AS e ON e.materialization_id = l.id
    JOIN flowstone_materializations AS u ON u.id = e.upstream_materialization_id
    JOIN latest AS n ON n.asset = u.asset AND n.partition_key = u.partition_key
    WHERE l.asset = ANY(%(report)s::text[])
      -- an edge to the upstream's latest materialization is fresh: only the others are looked up
      AND e.upstream_materialization_id NOT IN (SELECT id FROM latest)
      AND n.version <> coalesce(u.data_version, u.id::text)
    GROUP BY l.id
),
-- the fresh rows first, then the stale ones (a hashed NOT IN: no per-row loop over `stale`)
marked AS (
    SELECT l.asset, l.partition_key, l.id, l.code_version, '{}'::text[] AS upstreams
    FROM latest AS l
    WHERE l.asset = ANY(%(report)s::text[]) AND l.id NOT IN (SELECT id FROM stale)
    UNION ALL
    SELECT l.asset, l.partition_key, l.id, l.code_version, s.upstreams
    FROM stale AS s
    JOIN latest AS l ON l.id = s.id
)
-- no ORDER BY in the aggregates: both arrays take the rows in the same order, which is all the
-- caller needs (it orders the keys itself; sorting 10,000s of keys here cost more than the rest)
SELECT asset, code_version, upstreams AS stale_upstreams,
       array_agg(partition_key) AS partition_keys, array_agg(id) AS ids
FROM marked
GROUP BY asset, code_version, upstreams;
