-- 0010_step_logs: what each materialization attempt logged and printed (apply with
-- `flowstone db upgrade`). Written in batches by the step pipeline (at least every second while a
-- step runs, and with the step's outcome), bounded per attempt; see docs/observability.md.

CREATE TABLE flowstone_step_logs (
    -- Global write order (the follow cursor of `flowstone logs --follow`), not the order of lines.
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    materialization_id bigint NOT NULL REFERENCES flowstone_materializations (id) ON DELETE CASCADE,
    attempt            integer NOT NULL CHECK (attempt >= 1),
    -- Order of the line within its attempt, from 1, without gaps up to the truncation marker.
    seq                integer NOT NULL CHECK (seq >= 1),
    at                 timestamptz NOT NULL,
    -- Where the line came from: a logging record, a write to stdout or stderr, or FlowStone itself
    -- (the truncation marker).
    stream             text NOT NULL CHECK (stream IN ('log', 'stdout', 'stderr', 'flowstone')),
    level              text NOT NULL,
    logger             text NOT NULL,
    message            text NOT NULL,
    extra              jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT flowstone_step_logs_line_key UNIQUE (materialization_id, attempt, seq)
);
