-- 0012_autovacuum: per-table autovacuum settings for the hot tables (apply with
-- `flowstone db upgrade`; no rewrite, no lock beyond a brief one per table). With the default
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
