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

-- name: job_lost_claim
-- Claims (FOR UPDATE SKIP LOCKED, I18) the 'doing' jobs of one live worker that the worker is not
-- running: a fetch whose reply the worker never read (its connection died after the commit), or
-- a finish that never reached the server. The worker is alive, so stalled-job recovery (a silent
-- worker) never takes them; the worker that owns them hands them back (flowstone.queue.process).
SELECT j.id
FROM procrastinate_jobs AS j
WHERE j.worker_id = %(worker_id)s
  AND j.status = 'doing'
  AND j.id <> ALL(%(running)s::bigint[])
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED;

-- name: job_todo_now
-- Returns whether a job is waiting to run now in the given queues (all queues when NULL): a
-- one-shot worker drains again while one is (a successor deferred while its fetch loop ended).
SELECT EXISTS (SELECT FROM procrastinate_jobs AS j
               WHERE j.status = 'todo'
                 AND (%(queues)s::text[] IS NULL OR j.queue_name = ANY(%(queues)s::text[]))
                 AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())) AS waiting;

-- name: job_statistics_refresh
-- Refreshes the planner's statistics of procrastinate_jobs. Procrastinate's fetch orders the 'todo'
-- jobs by priority and id and takes the first; when the statistics were taken while few jobs
-- waited, the plan reads and sorts every waiting job on each fetch instead of walking the priority
-- index, until autovacuum analyses the table again (up to a minute later). Run after a large
-- enqueue commits. Without ownership of the table, PostgreSQL skips it with a warning.
ANALYZE procrastinate_jobs;

-- name: job_finish_succeeded
-- Finishes a step job as 'succeeded' inside the transaction of its last success (ADR 0016), with
-- Procrastinate's own function, so the worker's separate finish (a round trip and a durable commit
-- of its own) is not needed. The row is locked first, so Procrastinate's function always finds it
-- 'todo' or 'doing' and never raises into the success. Nothing happens when the job is not active
-- or when a step of the success is neither 'succeeded' nor 'skipped' (an attempt that lost its step
-- to another one, whose outcome the worker still has to settle): the worker finishes it then, as
-- for any job. Returns the job's id when it finished it.
WITH job AS (
    SELECT j.id
    FROM procrastinate_jobs AS j
    WHERE j.id = %(job_id)s
      AND j.status IN ('todo', 'doing')
      AND NOT EXISTS (SELECT FROM flowstone_materializations AS m
                      WHERE m.id = ANY(%(step_ids)s::bigint[])
                        AND m.status NOT IN ('succeeded', 'skipped'))
    FOR NO KEY UPDATE OF j
)
SELECT job.id, procrastinate_finish_job_v1(job.id, 'succeeded', false) AS finished
FROM job;

-- name: job_delete_finished
-- Deletes a job that its last success finished (job_finish_succeeded), for a worker that deletes
-- the jobs it finishes (Procrastinate's delete_jobs): what its own finish would have done.
DELETE FROM procrastinate_jobs AS j
WHERE j.id = %(job_id)s AND j.status = 'succeeded';
