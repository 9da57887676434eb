-- 0012_upkeep: per-table autovacuum settings for the hot tables, and the index retention uses to
-- prune old step logs (apply with `flowstone db upgrade`; the settings need no rewrite, the index
-- is built once). Autovacuum: with the default
-- scale factors (0.2 / 0.1) a table of 10 M rows waits for 2 M dead rows before it is vacuumed;
-- the queue's and the steps' tables churn constantly (claims, successes, pruning), so they are
-- vacuumed and analysed after 1-2 % instead, keeping index-only scans and plans good.
ALTER TABLE flowstone_materializations
    SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01);
ALTER TABLE flowstone_runs
    SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE flowstone_step_edges
    SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE flowstone_lineage
    SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE flowstone_step_logs
    SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE procrastinate_jobs
    SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01);
ALTER TABLE procrastinate_events
    SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);

-- Retention deletes step logs older than `logs_days` in batches, oldest first.
CREATE INDEX flowstone_step_logs_at_idx ON flowstone_step_logs (at);
