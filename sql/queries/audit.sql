-- name: audit_insert
-- Appends one event; returns its id.
INSERT INTO flowstone_audit_log (event, actor, run_id, materialization_id, asset, partition_key,
                                 details, at)
VALUES (%(event)s, %(actor)s, %(run_id)s, %(materialization_id)s, %(asset)s, %(partition_key)s,
        %(details)s, coalesce(%(now)s::timestamptz, now()))
RETURNING id;

-- name: audit_list
-- Returns events in id order, optionally of one run.
SELECT id, at, event, actor, run_id, materialization_id, asset, partition_key, details
FROM flowstone_audit_log
WHERE %(run_id)s::uuid IS NULL OR run_id = %(run_id)s
ORDER BY id
LIMIT %(limit)s;
