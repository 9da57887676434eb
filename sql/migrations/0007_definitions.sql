-- 0007_definitions: the definitions snapshot (apply with `flowstone db upgrade`). Every runtime on
-- Postgres publishes its definitions here, so that readers (the CLI without --defs, approvers, the
-- web UI) know the assets without importing the project's code.

-- One row per asset of the last published definitions (`present`), and of assets published before
-- and absent since (`present = false`, kept: their materializations still name them).
CREATE TABLE flowstone_definitions (
    asset        text PRIMARY KEY CHECK (asset ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    group_name   text NOT NULL DEFAULT 'default',
    description  text,
    deps         text[] NOT NULL DEFAULT '{}',
    partitions   jsonb,
    queue        text,
    code_version text,
    io_manager   text NOT NULL DEFAULT 'default',
    owners       text[] NOT NULL DEFAULT '{}',
    tags         jsonb NOT NULL DEFAULT '{}',
    spec         jsonb NOT NULL,
    position     integer NOT NULL,
    present      boolean NOT NULL DEFAULT true,
    definitions_hash text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX flowstone_definitions_group_idx ON flowstone_definitions (group_name) WHERE present;

-- The published set as a whole: one row.
CREATE TABLE flowstone_definitions_state (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    hash         text NOT NULL,
    format       integer NOT NULL,
    assets       integer NOT NULL,
    automation   jsonb NOT NULL DEFAULT '{}',
    published_by text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
