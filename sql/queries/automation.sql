-- name: schedule_state_ensure
-- Creates the state row of a schedule if it has none (first evaluation or first pause).
INSERT INTO flowstone_schedule_state (name, created_at, updated_at)
VALUES (%(name)s, coalesce(%(now)s::timestamptz, now()), coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (name) DO NOTHING;

-- name: schedule_state_claim
-- Claims a schedule's state row for one evaluation (FOR UPDATE SKIP LOCKED, I18); nothing when
-- another evaluator holds it.
SELECT * FROM flowstone_schedule_state WHERE name = %(name)s FOR UPDATE SKIP LOCKED;

-- name: schedule_tick_insert
-- Records a tick as fired; returns it, or nothing when it was already fired (once per tick).
INSERT INTO flowstone_schedule_ticks (schedule, tick_at, created_at)
VALUES (%(name)s, %(tick_at)s, coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (schedule, tick_at) DO NOTHING
RETURNING schedule, tick_at;

-- name: schedule_tick_set_run
-- Links a fired tick to the run it submitted.
UPDATE flowstone_schedule_ticks SET run_id = %(run_id)s WHERE schedule = %(name)s AND tick_at = %(tick_at)s;

-- name: schedule_state_advance
-- Moves a schedule's last evaluated tick forward.
UPDATE flowstone_schedule_state
SET last_tick_at = %(last_tick_at)s, updated_at = coalesce(%(now)s::timestamptz, now())
WHERE name = %(name)s;

-- name: schedule_state_set_paused
-- Pauses or resumes a schedule (creating its state row if needed); returns the row.
INSERT INTO flowstone_schedule_state (name, paused, updated_by, created_at, updated_at)
VALUES (%(name)s, %(paused)s, %(by)s, coalesce(%(now)s::timestamptz, now()),
        coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (name) DO UPDATE
SET paused = EXCLUDED.paused, updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at
RETURNING *;

-- name: schedule_state_list
-- Returns every schedule state row with its tick count, by name.
SELECT s.*, (SELECT count(*) FROM flowstone_schedule_ticks AS t WHERE t.schedule = s.name) AS ticks
FROM flowstone_schedule_state AS s
ORDER BY s.name;

-- name: sensor_state_ensure
-- Creates the state row of a sensor if it has none.
INSERT INTO flowstone_sensor_state (name, created_at)
VALUES (%(name)s, coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (name) DO NOTHING;

-- name: sensor_state_claim
-- Claims a sensor's state row for one evaluation (FOR UPDATE SKIP LOCKED, I18).
SELECT * FROM flowstone_sensor_state WHERE name = %(name)s FOR UPDATE SKIP LOCKED;

-- name: sensor_request_insert
-- Records a keyed run request; returns it, or nothing when the key was already requested.
INSERT INTO flowstone_sensor_requests (sensor, key, created_at)
VALUES (%(name)s, %(key)s, coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (sensor, key) DO NOTHING
RETURNING key;

-- name: sensor_request_set_run
-- Links a keyed request to the run it submitted.
UPDATE flowstone_sensor_requests SET run_id = %(run_id)s WHERE sensor = %(name)s AND key = %(key)s;

-- name: sensor_state_record
-- Records a successful evaluation: the new cursor, its time, no error.
UPDATE flowstone_sensor_state
SET cursor            = %(cursor)s,
    last_evaluated_at = coalesce(%(now)s::timestamptz, now()),
    evaluations       = evaluations + 1,
    last_error        = NULL,
    last_error_at     = NULL
WHERE name = %(name)s;

-- name: sensor_state_record_error
-- Records a failed evaluation: the error and its time; the cursor is kept.
UPDATE flowstone_sensor_state
SET last_evaluated_at = coalesce(%(now)s::timestamptz, now()),
    evaluations       = evaluations + 1,
    last_error        = %(error)s,
    last_error_at     = coalesce(%(now)s::timestamptz, now())
WHERE name = %(name)s;

-- name: sensor_state_list
-- Returns every sensor state row, by name.
SELECT s.*, (SELECT count(*) FROM flowstone_sensor_requests AS r WHERE r.sensor = s.name) AS requests
FROM flowstone_sensor_state AS s
ORDER BY s.name;
