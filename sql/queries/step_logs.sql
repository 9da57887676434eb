-- name: step_logs_insert
-- Appends a batch of captured lines (one JSON array of rows); a line written before (the same
-- materialization, attempt and seq) is left as it is. Returns nothing.
INSERT INTO flowstone_step_logs (materialization_id, attempt, seq, at, stream, level, logger, message, extra)
SELECT l.materialization_id, l.attempt, l.seq, l.at, l.stream, l.level, l.logger, l.message,
       coalesce(l.extra, '{}')
FROM jsonb_to_recordset(%(lines)s::jsonb) AS l(materialization_id bigint, attempt integer, seq integer,
                                               at timestamptz, stream text, level text, logger text,
                                               message text, extra jsonb)
ON CONFLICT ON CONSTRAINT flowstone_step_logs_line_key DO NOTHING;

-- name: step_logs_async_commit
-- Lets the transaction of a log batch commit without waiting for the WAL flush: a line lost in a
-- server crash is a line of log, and the step's outcome commits durably after it anyway.
SELECT set_config('synchronous_commit', 'off', true) AS setting;

-- name: step_logs_of_run
-- Returns the lines of a run's steps (optionally one asset, one partition key, only ids above
-- after_id), with their step's asset and partition key, in step then attempt then line order; at
-- most max_lines.
SELECT l.id, m.run_id, m.asset, m.partition_key, l.materialization_id, l.attempt, l.seq, l.at,
       l.stream, l.level, l.logger, l.message, l.extra
FROM flowstone_materializations AS m
JOIN flowstone_step_logs AS l ON l.materialization_id = m.id
WHERE m.run_id = %(run_id)s
  AND (%(asset)s::text IS NULL OR m.asset = %(asset)s)
  AND (%(partition_key)s::text IS NULL OR m.partition_key = %(partition_key)s)
  AND l.id > coalesce(%(after_id)s::bigint, 0)
ORDER BY m.id, l.attempt, l.seq
LIMIT %(max_lines)s;
