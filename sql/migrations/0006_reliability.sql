-- 0006_reliability: what 0.3 needs to survive faults (apply with `flowstone db upgrade`; stop the
-- workers of 0.2 first: they would not cancel approval-timeout jobs nor read `json` outputs).

-- Outputs of the Postgres IO manager keep the codec's text exactly: `json` stores the text as
-- written, where `jsonb` turned 1e16 into an integer, -0.0 into 0 and reordered object keys. The
-- format name stays 'jsonb' (what the codec writes); the operators ->, ->> and #> work on both.
ALTER TABLE flowstone_outputs ALTER COLUMN value TYPE json USING value::json;

-- The approval-timeout job of a request, cancelled in the transaction of the decision; and a
-- request withdrawn when its run is cancelled.
ALTER TABLE flowstone_approvals ADD COLUMN timeout_job_id bigint;
ALTER TABLE flowstone_approvals DROP CONSTRAINT flowstone_approvals_status_check;
ALTER TABLE flowstone_approvals ADD CONSTRAINT flowstone_approvals_status_check
    CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'withdrawn'));

-- The recovery sweep finds active steps whose job ended without them (materialization_orphaned_claim).
CREATE INDEX flowstone_materializations_active_job_idx
    ON flowstone_materializations (job_id) WHERE status IN ('queued', 'running');

-- In-process runs still running: the sweep checks that their owner process is alive
-- (run_abandoned_claim).
CREATE INDEX flowstone_runs_active_idx ON flowstone_runs (kind, created_at) WHERE status = 'running';

-- The claim looks a unit of work up twice, by batch key and by the step's own key (identity key).
-- A partial batch index cannot serve the second lookup, so even a generic plan made before the
-- table has statistics (a large backfill just enqueued) cannot scan a whole run through it.
DROP INDEX flowstone_materializations_batch_idx;
CREATE INDEX flowstone_materializations_batch_idx
    ON flowstone_materializations (run_id, asset, batch_key) WHERE batch_key IS NOT NULL;
