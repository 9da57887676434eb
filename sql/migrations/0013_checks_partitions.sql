-- 0013_checks_partitions: asset check results and dynamic partition keys (apply with
-- `flowstone db upgrade`).
--
-- Check results are written in the transaction that records their asset's success, before the
-- steps downstream are released: a failing blocking check (severity error) skips those steps in
-- the same transaction. Dynamic partition keys are rows, unique per (definition, key), so that
-- concurrent adds of one key leave one row.

CREATE TABLE flowstone_check_results (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    materialization_id bigint NOT NULL REFERENCES flowstone_materializations (id) ON DELETE CASCADE,
    asset              text NOT NULL,
    partition_key      text NOT NULL,
    run_id             uuid NOT NULL,
    check_name         text NOT NULL CHECK (check_name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    passed             boolean NOT NULL,
    severity           text NOT NULL CHECK (severity IN ('error', 'warning')),
    blocking           boolean NOT NULL,
    description        text,
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    error              jsonb,
    at                 timestamptz NOT NULL DEFAULT now(),
    -- one result per check of a materialization: a success is recorded once
    CONSTRAINT flowstone_check_results_once UNIQUE (materialization_id, check_name),
    -- a check that raised did not pass
    CONSTRAINT flowstone_check_results_error_fails CHECK (error IS NULL OR NOT passed)
);
CREATE INDEX flowstone_check_results_asset_idx
    ON flowstone_check_results (asset, check_name, partition_key, at DESC, id DESC);

CREATE TABLE flowstone_dynamic_partitions (
    id            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- the order keys were added in
    definition    text NOT NULL CHECK (definition ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,63}$'),
    partition_key text NOT NULL CHECK (partition_key LIKE 's:%'),
    added_at      timestamptz NOT NULL DEFAULT now(),
    added_by      text,
    PRIMARY KEY (definition, partition_key)
);

-- The data version of a materialization: the one its asset set (metadata `data_version`, e.g.
-- `context.add_metadata(data_version=...)`), else the content hash its IO manager recorded
-- (`content_hash`: Parquet, DuckDB). NULL means "this materialization's own version": staleness
-- then compares materialization ids. Generated, so that no writer can disagree with the metadata.
ALTER TABLE flowstone_materializations
    ADD COLUMN data_version text
    GENERATED ALWAYS AS (coalesce(metadata ->> 'data_version', metadata ->> 'content_hash')) STORED;
