-- name: lineage_upstream
-- Returns each materialization read, directly or transitively, by one materialization, once, at
-- its nearest depth (1 = direct), with one reader on the level below (the smallest id) and the
-- input name, and every other reader in the walk (also_via: the other edges of a diamond). The
-- walk stops at max_depth; UNION over (id, depth) keeps it linear in the graph
-- size (no path enumeration) and ends on cycles.
WITH RECURSIVE walk (id, depth) AS (
    SELECT l.upstream_materialization_id, 1
    FROM flowstone_lineage AS l
    WHERE l.materialization_id = %(id)s
    UNION
    SELECT l.upstream_materialization_id, w.depth + 1
    FROM walk AS w
    JOIN flowstone_lineage AS l ON l.materialization_id = w.id
    WHERE w.depth < %(max_depth)s
), nearest AS (
    SELECT id, min(depth) AS depth FROM walk WHERE id <> %(id)s GROUP BY id
), levels AS (
    SELECT id, depth FROM nearest
    UNION ALL
    SELECT %(id)s, 0
)
SELECT n.depth, e.reader_id, e.input_name, m.id, m.run_id, m.asset, m.partition_key, m.status,
       m.finished_at,
       ARRAY(SELECT DISTINCT l.materialization_id
             FROM flowstone_lineage AS l
             JOIN levels AS p ON p.id = l.materialization_id
             WHERE l.upstream_materialization_id = n.id AND l.materialization_id <> e.reader_id
             ORDER BY 1) AS also_via
FROM nearest AS n
JOIN flowstone_materializations AS m ON m.id = n.id
JOIN LATERAL (
    SELECT l.materialization_id AS reader_id, l.input_name
    FROM flowstone_lineage AS l
    JOIN levels AS p ON p.id = l.materialization_id AND p.depth = n.depth - 1
    WHERE l.upstream_materialization_id = n.id
    ORDER BY l.materialization_id
    LIMIT 1
) AS e ON true
ORDER BY n.depth, m.asset COLLATE "C", m.partition_key COLLATE "C", m.id;

-- name: lineage_downstream
-- Returns each materialization that read, directly or transitively, one materialization, once, at
-- its nearest depth, with one row it read on the level below (the smallest id), the input
-- name and every other row of the walk it read (also_via). Same walk as lineage_upstream, in the other direction.
WITH RECURSIVE walk (id, depth) AS (
    SELECT l.materialization_id, 1
    FROM flowstone_lineage AS l
    WHERE l.upstream_materialization_id = %(id)s
    UNION
    SELECT l.materialization_id, w.depth + 1
    FROM walk AS w
    JOIN flowstone_lineage AS l ON l.upstream_materialization_id = w.id
    WHERE w.depth < %(max_depth)s
), nearest AS (
    SELECT id, min(depth) AS depth FROM walk WHERE id <> %(id)s GROUP BY id
), levels AS (
    SELECT id, depth FROM nearest
    UNION ALL
    SELECT %(id)s, 0
)
SELECT n.depth, e.source_id, e.input_name, m.id, m.run_id, m.asset, m.partition_key, m.status,
       m.finished_at,
       ARRAY(SELECT DISTINCT l.upstream_materialization_id
             FROM flowstone_lineage AS l
             JOIN levels AS p ON p.id = l.upstream_materialization_id
             WHERE l.materialization_id = n.id AND l.upstream_materialization_id <> e.source_id
             ORDER BY 1) AS also_via
FROM nearest AS n
JOIN flowstone_materializations AS m ON m.id = n.id
JOIN LATERAL (
    SELECT l.upstream_materialization_id AS source_id, l.input_name
    FROM flowstone_lineage AS l
    JOIN levels AS p ON p.id = l.upstream_materialization_id AND p.depth = n.depth - 1
    WHERE l.materialization_id = n.id
    ORDER BY l.upstream_materialization_id
    LIMIT 1
) AS e ON true
ORDER BY n.depth, m.asset COLLATE "C", m.partition_key COLLATE "C", m.id;
