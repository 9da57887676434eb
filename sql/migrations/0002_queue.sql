-- 0002_queue: what the durable queue needs (apply with `flowstone db upgrade`).
--
-- flowstone_step_edges: the DAG of one run at step level (asset + partition). The success
-- transaction of a step decrements `pending_upstream` of its downstream steps through these edges
-- and enqueues those that reach zero (I14); a terminal failure skips the steps reachable from it.
CREATE TABLE flowstone_step_edges (
    run_id                 uuid NOT NULL,
    upstream_asset         text NOT NULL,
    upstream_partition_key text NOT NULL,
    asset                  text NOT NULL,
    partition_key          text NOT NULL,
    PRIMARY KEY (run_id, upstream_asset, upstream_partition_key, asset, partition_key),
    FOREIGN KEY (upstream_asset, upstream_partition_key, run_id)
        REFERENCES flowstone_materializations (asset, partition_key, run_id) ON DELETE CASCADE,
    FOREIGN KEY (asset, partition_key, run_id)
        REFERENCES flowstone_materializations (asset, partition_key, run_id) ON DELETE CASCADE
);

CREATE INDEX flowstone_step_edges_downstream_idx
    ON flowstone_step_edges (run_id, asset, partition_key);

-- Steps run by one job share a batch key (the encoded partition key the job's args name):
-- `backfill(..., partitions_per_job=N)` puts N partitions of an asset in one job.
ALTER TABLE flowstone_materializations ADD COLUMN batch_key text;

CREATE INDEX flowstone_materializations_batch_idx
    ON flowstone_materializations (run_id, asset, batch_key);
CREATE INDEX flowstone_materializations_job_idx
    ON flowstone_materializations (job_id) WHERE job_id IS NOT NULL;
