-- 0001_core: FlowStone's core tables (DESIGN.md §3). Users query these directly; docs/sql.md documents
-- every column. Applied by `flowstone db upgrade` in one transaction.

-- One row per run: a sync materialize(), a submit() or a backfill().
CREATE TABLE flowstone_runs (
    run_id       uuid PRIMARY KEY,
    kind         text NOT NULL DEFAULT 'materialize'
                 CHECK (kind IN ('materialize', 'submit', 'backfill')),
    selection    text[] NOT NULL,
    config       jsonb NOT NULL DEFAULT '{}'::jsonb
                 CHECK (jsonb_typeof(config) = 'object'),
    tags         jsonb NOT NULL DEFAULT '{}'::jsonb
                 CHECK (jsonb_typeof(tags) = 'object'),
    requested_by text NOT NULL,
    status       text NOT NULL DEFAULT 'running'
                 CHECK (status IN ('queued', 'running', 'waiting_approval', 'succeeded', 'failed',
                                   'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);

CREATE INDEX flowstone_runs_created_at_idx ON flowstone_runs (created_at DESC);

-- One row per (asset, partition_key, run_id): a planned, running or finished step.
-- partition_key is the canonical encoding of flowstone.partition_keys (never NULL: unpartitioned
-- assets use '__unpartitioned__').
CREATE TABLE flowstone_materializations (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           uuid NOT NULL REFERENCES flowstone_runs (run_id) ON DELETE CASCADE,
    asset            text NOT NULL CHECK (asset ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    partition_key    text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'queued', 'running', 'waiting_approval',
                                       'succeeded', 'failed', 'skipped', 'rejected', 'cancelled')),
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    pending_upstream integer NOT NULL DEFAULT 0 CHECK (pending_upstream >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    queued_at        timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    duration_ms      double precision
                     GENERATED ALWAYS AS (extract(epoch FROM finished_at - started_at) * 1000) STORED,
    error            jsonb,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    output_ref       jsonb,
    code_version     text,
    job_id           bigint,
    CONSTRAINT flowstone_materializations_identity_key UNIQUE (asset, partition_key, run_id),
    -- A succeeded row always says where its output is (I10).
    CONSTRAINT flowstone_materializations_succeeded_has_output
        CHECK (status <> 'succeeded' OR (output_ref IS NOT NULL AND finished_at IS NOT NULL))
);

-- "Latest" (I8): ORDER BY finished_at DESC, id DESC among succeeded rows of an asset+partition.
CREATE INDEX flowstone_materializations_latest_idx
    ON flowstone_materializations (asset, partition_key, finished_at DESC, id DESC)
    WHERE status = 'succeeded';
CREATE INDEX flowstone_materializations_run_status_idx
    ON flowstone_materializations (run_id, status);

-- Edges from a materialization to the exact upstream materialization it read.
CREATE TABLE flowstone_lineage (
    materialization_id          bigint NOT NULL
                                REFERENCES flowstone_materializations (id) ON DELETE CASCADE,
    upstream_materialization_id bigint NOT NULL
                                REFERENCES flowstone_materializations (id) ON DELETE RESTRICT,
    input_name                  text NOT NULL,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (materialization_id, upstream_materialization_id),
    CHECK (materialization_id <> upstream_materialization_id)
);

CREATE INDEX flowstone_lineage_upstream_idx ON flowstone_lineage (upstream_materialization_id);

-- One approval per gated materialization.
CREATE TABLE flowstone_approvals (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    materialization_id bigint NOT NULL
                       REFERENCES flowstone_materializations (id) ON DELETE CASCADE,
    run_id             uuid NOT NULL REFERENCES flowstone_runs (run_id) ON DELETE CASCADE,
    asset              text NOT NULL,
    partition_key      text NOT NULL,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    message            text NOT NULL,
    context_data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    approvers          text[],
    on_timeout         text NOT NULL DEFAULT 'reject'
                       CHECK (on_timeout IN ('reject', 'approve', 'fail')),
    requested_at       timestamptz NOT NULL DEFAULT now(),
    timeout_at         timestamptz,
    decided_by         text,
    decided_at         timestamptz,
    reason             text,
    CONSTRAINT flowstone_approvals_materialization_key UNIQUE (materialization_id),
    CHECK ((status = 'pending') = (decided_at IS NULL))
);

CREATE INDEX flowstone_approvals_pending_idx
    ON flowstone_approvals (timeout_at) WHERE status = 'pending';

-- Append-only event log: the database rejects UPDATE, DELETE and TRUNCATE.
CREATE TABLE flowstone_audit_log (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                 timestamptz NOT NULL DEFAULT now(),
    event              text NOT NULL CHECK (event ~ '^[a-z_]+(\.[a-z_]+)*$'),
    actor              text NOT NULL,
    run_id             uuid,
    materialization_id bigint,
    asset              text,
    partition_key      text,
    details            jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX flowstone_audit_log_run_idx ON flowstone_audit_log (run_id, id);

CREATE FUNCTION flowstone_audit_log_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'flowstone_audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER flowstone_audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON flowstone_audit_log
    FOR EACH ROW EXECUTE FUNCTION flowstone_audit_log_reject_change();

CREATE TRIGGER flowstone_audit_log_no_truncate
    BEFORE TRUNCATE ON flowstone_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION flowstone_audit_log_reject_change();

-- Latest succeeded materialization per asset and partition (I8).
CREATE VIEW flowstone_latest_materializations AS
SELECT DISTINCT ON (asset, partition_key) *
FROM flowstone_materializations
WHERE status = 'succeeded'
ORDER BY asset, partition_key, finished_at DESC, id DESC;

-- Step counts of every run, by status.
CREATE VIEW flowstone_run_status AS
SELECT r.run_id,
       r.kind,
       r.status,
       r.created_at,
       r.finished_at,
       count(m.id)                                              AS steps,
       count(m.id) FILTER (WHERE m.status = 'pending')          AS pending,
       count(m.id) FILTER (WHERE m.status = 'queued')           AS queued,
       count(m.id) FILTER (WHERE m.status = 'running')          AS running,
       count(m.id) FILTER (WHERE m.status = 'waiting_approval') AS waiting_approval,
       count(m.id) FILTER (WHERE m.status = 'succeeded')        AS succeeded,
       count(m.id) FILTER (WHERE m.status = 'failed')           AS failed,
       count(m.id) FILTER (WHERE m.status = 'skipped')          AS skipped,
       count(m.id) FILTER (WHERE m.status = 'rejected')         AS rejected,
       count(m.id) FILTER (WHERE m.status = 'cancelled')        AS cancelled
FROM flowstone_runs r
LEFT JOIN flowstone_materializations m ON m.run_id = r.run_id
GROUP BY r.run_id;

-- Procrastinate never indexes procrastinate_jobs.worker_id except for 'doing' rows; pruning workers
-- then scans the whole table (procrastinate issue #1454). Only when its schema is present.
DO $$
BEGIN
    IF to_regclass('procrastinate_jobs') IS NOT NULL THEN
        CREATE INDEX IF NOT EXISTS flowstone_procrastinate_jobs_worker_id_idx
            ON procrastinate_jobs (worker_id);
    END IF;
END
$$;
