-- name: step_edges_insert
-- Records the step-level edges of a run, in one statement.
INSERT INTO flowstone_step_edges (run_id, upstream_asset, upstream_partition_key, asset, partition_key)
SELECT %(run_id)s, e.upstream_asset, e.upstream_partition_key, e.asset, e.partition_key
FROM unnest(%(upstream_assets)s::text[], %(upstream_keys)s::text[], %(assets)s::text[],
            %(keys)s::text[]) AS e(upstream_asset, upstream_partition_key, asset, partition_key);

-- name: step_edges_of_run
-- Returns the step-level edges of a run (upstream asset and key, downstream asset and key).
SELECT upstream_asset, upstream_partition_key, asset, partition_key
FROM flowstone_step_edges
WHERE run_id = %(run_id)s;
