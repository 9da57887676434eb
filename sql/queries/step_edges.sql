-- name: step_edges_insert
-- Records one step-level edge of a run (executemany).
INSERT INTO flowstone_step_edges (run_id, upstream_asset, upstream_partition_key, asset, partition_key)
VALUES (%(run_id)s, %(upstream_asset)s, %(upstream_partition_key)s, %(asset)s, %(partition_key)s);

-- name: step_edges_of_run
-- Returns the step-level edges of a run (upstream asset and key, downstream asset and key).
SELECT upstream_asset, upstream_partition_key, asset, partition_key
FROM flowstone_step_edges
WHERE run_id = %(run_id)s;
