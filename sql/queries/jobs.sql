-- name: job_stalled_claim
-- Claims (FOR UPDATE SKIP LOCKED, I18) FlowStone jobs in 'doing' whose worker is gone or has not
-- sent a heartbeat for the given seconds; returns their ids.
SELECT j.id
FROM procrastinate_jobs AS j
LEFT JOIN procrastinate_workers AS w ON w.id = j.worker_id
WHERE j.status = 'doing'
  AND j.task_name = ANY(%(task_names)s::text[])
  AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %(seconds)s::float8))
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED;
