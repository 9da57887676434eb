-- name: lineage_upstream
-- Returns the materializations read, directly or transitively, by one materialization, with their
-- depth (1 = direct) and the reader; stops at max_depth and never revisits a row (cycle guard).
WITH RECURSIVE walk (id, reader_id, input_name, depth, path) AS (
    SELECT l.upstream_materialization_id, l.materialization_id, l.input_name, 1,
           ARRAY[l.materialization_id, l.upstream_materialization_id]
    FROM flowstone_lineage AS l
    WHERE l.materialization_id = %(id)s
    UNION ALL
    SELECT l.upstream_materialization_id, l.materialization_id, l.input_name, w.depth + 1,
           w.path || l.upstream_materialization_id
    FROM walk AS w
    JOIN flowstone_lineage AS l ON l.materialization_id = w.id
    WHERE w.depth < %(max_depth)s AND NOT l.upstream_materialization_id = ANY(w.path)
)
SELECT w.depth, w.reader_id, w.input_name, m.id, m.run_id, m.asset, m.partition_key, m.status,
       m.finished_at
FROM walk AS w
JOIN flowstone_materializations AS m ON m.id = w.id
ORDER BY w.depth, m.asset COLLATE "C", m.partition_key COLLATE "C", m.id, 2;

-- name: lineage_downstream
-- Returns the materializations that read, directly or transitively, one materialization, with
-- their depth and the row they read; stops at max_depth, never revisits a row.
WITH RECURSIVE walk (id, source_id, input_name, depth, path) AS (
    SELECT l.materialization_id, l.upstream_materialization_id, l.input_name, 1,
           ARRAY[l.upstream_materialization_id, l.materialization_id]
    FROM flowstone_lineage AS l
    WHERE l.upstream_materialization_id = %(id)s
    UNION ALL
    SELECT l.materialization_id, l.upstream_materialization_id, l.input_name, w.depth + 1,
           w.path || l.materialization_id
    FROM walk AS w
    JOIN flowstone_lineage AS l ON l.upstream_materialization_id = w.id
    WHERE w.depth < %(max_depth)s AND NOT l.materialization_id = ANY(w.path)
)
SELECT w.depth, w.source_id, w.input_name, m.id, m.run_id, m.asset, m.partition_key, m.status,
       m.finished_at
FROM walk AS w
JOIN flowstone_materializations AS m ON m.id = w.id
ORDER BY w.depth, m.asset COLLATE "C", m.partition_key COLLATE "C", m.id, 2;
