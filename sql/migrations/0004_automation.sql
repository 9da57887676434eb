-- 0004_automation: durable state of schedules and sensors (apply with `flowstone db upgrade`).

-- One row per schedule: paused or not, and the last tick evaluated. Survives restarts; evaluators
-- claim the row with FOR UPDATE SKIP LOCKED (I18).
CREATE TABLE flowstone_schedule_state (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    paused       boolean NOT NULL DEFAULT false,
    last_tick_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text
);

-- One row per fired tick: the primary key makes a tick fire once across any number of workers.
CREATE TABLE flowstone_schedule_ticks (
    schedule   text NOT NULL REFERENCES flowstone_schedule_state (name) ON DELETE CASCADE,
    tick_at    timestamptz NOT NULL,
    run_id     uuid REFERENCES flowstone_runs (run_id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick_at)
);

-- One row per sensor: its durable cursor and the outcome of its last evaluation.
CREATE TABLE flowstone_sensor_state (
    name              text PRIMARY KEY CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    cursor            text,
    last_evaluated_at timestamptz,
    evaluations       bigint NOT NULL DEFAULT 0,
    last_error        jsonb,
    last_error_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per run request a sensor made with a key: replaying the same key never submits twice.
CREATE TABLE flowstone_sensor_requests (
    sensor     text NOT NULL REFERENCES flowstone_sensor_state (name) ON DELETE CASCADE,
    key        text NOT NULL,
    run_id     uuid REFERENCES flowstone_runs (run_id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor, key)
);
