-- 0003_outputs: the table of the Postgres IO manager (apply with `flowstone db upgrade`).
-- One row per materialization whose output is stored in Postgres, written in the same statement
-- as the materialization's `succeeded` status (I10, I11): an output exists exactly when its
-- metadata committed. Values are JSONB from FlowStone's typed codec, or raw bytes.
CREATE TABLE flowstone_outputs (
    materialization_id bigint PRIMARY KEY
                       REFERENCES flowstone_materializations (id) ON DELETE CASCADE,
    asset              text NOT NULL,
    partition_key      text NOT NULL,
    format             text NOT NULL CHECK (format IN ('jsonb', 'bytes')),
    value              jsonb,
    data               bytea,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((format = 'jsonb') = (value IS NOT NULL) AND (format = 'bytes') = (data IS NOT NULL))
);

CREATE INDEX flowstone_outputs_asset_idx ON flowstone_outputs (asset, partition_key);
