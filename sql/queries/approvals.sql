-- name: approval_request
-- In one statement: the running attempt -> waiting_approval, its approval row (once per
-- materialization: ON CONFLICT DO NOTHING), and the audit event of a new request. Returns one row
-- when the step now waits (approval_id is NULL when the approval already existed), else nothing.
WITH waiting AS (
    UPDATE flowstone_materializations
    SET status = 'waiting_approval'
    WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
    RETURNING *
), inserted AS (
    INSERT INTO flowstone_approvals (materialization_id, run_id, asset, partition_key, message,
                                     context_data, approvers, on_timeout, requested_at, timeout_at)
    SELECT w.id, w.run_id, w.asset, w.partition_key, %(message)s, %(context_data)s,
           %(approvers)s::text[], %(on_timeout)s, coalesce(%(now)s::timestamptz, now()),
           coalesce(%(now)s::timestamptz, now()) + make_interval(secs => %(timeout_s)s::float8)
    FROM waiting AS w
    ON CONFLICT ON CONSTRAINT flowstone_approvals_materialization_key DO NOTHING
    RETURNING *
), audit AS (
    INSERT INTO flowstone_audit_log (event, actor, run_id, materialization_id, asset, partition_key,
                                     details, at)
    SELECT 'approval.requested', %(actor)s, i.run_id, i.materialization_id, i.asset,
           i.partition_key,
           jsonb_build_object('approval_id', i.id, 'message', i.message, 'timeout_at', i.timeout_at,
                              'on_timeout', i.on_timeout),
           i.requested_at
    FROM inserted AS i
)
SELECT w.id AS materialization_id, w.run_id, w.asset, w.partition_key, i.id AS approval_id,
       i.timeout_at
FROM waiting AS w
LEFT JOIN inserted AS i ON true;

-- name: approval_get
-- Returns one approval, or nothing.
SELECT * FROM flowstone_approvals WHERE id = %(id)s;

-- name: approval_for_materialization
-- Returns the approval of a materialization, or nothing.
SELECT * FROM flowstone_approvals WHERE materialization_id = %(materialization_id)s;

-- name: approval_list
-- Returns approvals (optionally of one status), oldest request first.
SELECT *
FROM flowstone_approvals
WHERE %(status)s::text IS NULL OR status = %(status)s
ORDER BY requested_at, id
LIMIT %(limit)s;

-- name: approval_lock
-- Locks one approval for a decision (FOR UPDATE); returns it with its run's kind and tags, or
-- nothing.
SELECT a.*, r.kind AS run_kind, r.tags AS run_tags
FROM flowstone_approvals AS a
JOIN flowstone_runs AS r ON r.run_id = a.run_id
WHERE a.id = %(id)s
FOR UPDATE OF a;

-- name: approval_due_claim
-- Claims pending approvals whose timeout has passed (FOR UPDATE SKIP LOCKED, I18); returns them
-- with their run's kind and tags. Optionally only the approval of one materialization.
SELECT a.*, r.kind AS run_kind, r.tags AS run_tags
FROM flowstone_approvals AS a
JOIN flowstone_runs AS r ON r.run_id = a.run_id
WHERE a.status = 'pending'
  AND a.timeout_at <= coalesce(%(now)s::timestamptz, now())
  AND (%(materialization_id)s::bigint IS NULL OR a.materialization_id = %(materialization_id)s)
ORDER BY a.timeout_at, a.id
LIMIT %(limit)s
FOR UPDATE OF a SKIP LOCKED;

-- name: approval_decide
-- Compare-and-set from pending: records the decision; returns the approval, or nothing when it
-- was already decided.
UPDATE flowstone_approvals
SET status     = %(status)s,
    decided_by = %(by)s,
    decided_at = coalesce(%(now)s::timestamptz, now()),
    reason     = %(reason)s
WHERE id = %(id)s AND status = 'pending'
RETURNING *;

-- name: approval_set_timeout_job
-- Records the approval-timeout job of a request (cancelled when a decision comes first).
UPDATE flowstone_approvals SET timeout_job_id = %(job_id)s WHERE id = %(id)s;

-- name: approval_withdraw_run
-- The pending approvals of a cancelled run are withdrawn (nobody needs to decide any more);
-- returns them.
UPDATE flowstone_approvals
SET status     = 'withdrawn',
    decided_by = %(by)s,
    decided_at = coalesce(%(now)s::timestamptz, now()),
    reason     = %(reason)s
WHERE run_id = %(run_id)s AND status = 'pending'
RETURNING *;
