-- 0016_partition_status_per_statement: flowstone_partition_status follows a step's status changes
-- with one trigger call per statement instead of one per row (no table is rewritten; workers may
-- keep running: the old and the new trigger are swapped in this migration's transaction).
--
-- 0014's update trigger ran once per updated row: a PL/pgSQL call and an UPDATE of the partition's
-- row for each step of a success. A backfill job with 50 partitions made 50 calls in its success
-- statement (about a fifth of the server time of a success, measured). The statement trigger reads
-- the statement's old and new rows (transition tables), keeps the steps that moved into or out of
-- an ended status or changed their finish, groups them by partition and updates each partition's
-- row once. Same rules as 0014:
--   * a partition's status and finish follow its newest step (newest_id) when that step moved;
--   * a success moves last_success_at forward; a success changed or taken back (never done by
--     FlowStone) recomputes it from the steps, as the table is at the end of the statement;
--   * moves between unfinished statuses (the claim) change nothing.
-- The UPDATE reads newest_id and last_success_at from the partition's current row (re-read after
-- a concurrent change), so concurrent planning and successes stay exact, as with the row trigger.
-- Transition tables cannot be combined with a column list, so the trigger fires for every UPDATE
-- of flowstone_materializations; one that moves nothing ends at the grouping, having touched no
-- partition row.

DROP TRIGGER flowstone_partition_status_update ON flowstone_materializations;
DROP FUNCTION flowstone_partition_status_updated();

CREATE FUNCTION flowstone_partition_status_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
                   WHERE (o.status IS DISTINCT FROM n.status
                          AND (o.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')
                               OR n.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')))
                      OR o.finished_at IS DISTINCT FROM n.finished_at) THEN
        RETURN NULL;  -- nothing moved (the claim): no grouping, no partition row
    END IF;
    UPDATE flowstone_partition_status AS p
    SET status = coalesce((SELECT x.status FROM unnest(g.ids, g.statuses) AS x(id, status)
                           WHERE x.id = p.newest_id), p.status),
        finished_at = CASE WHEN p.newest_id = ANY(g.ids)
                           THEN (SELECT x.finished_at
                                 FROM unnest(g.ids, g.finishes) AS x(id, finished_at)
                                 WHERE x.id = p.newest_id)
                           ELSE p.finished_at END,
        last_success_at = CASE
            WHEN g.taken_back  -- a success changed or taken back (not done by FlowStone)
                THEN (SELECT max(l.finished_at) FROM flowstone_materializations AS l
                      WHERE l.asset = g.asset AND l.partition_key = g.partition_key
                        AND l.status = 'succeeded')
            WHEN g.succeeded_at IS NOT NULL THEN greatest(p.last_success_at, g.succeeded_at)
            ELSE p.last_success_at END
    FROM (SELECT n.asset, n.partition_key,
                 array_agg(n.id) AS ids,
                 array_agg(n.status) AS statuses,
                 array_agg(n.finished_at) AS finishes,
                 bool_or(o.status = 'succeeded') AS taken_back,
                 max(n.finished_at) FILTER (WHERE n.status = 'succeeded') AS succeeded_at
          FROM new_rows AS n
          JOIN old_rows AS o ON o.id = n.id
          WHERE (o.status IS DISTINCT FROM n.status
                 AND (o.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')
                      OR n.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')))
             OR o.finished_at IS DISTINCT FROM n.finished_at
          GROUP BY n.asset, n.partition_key) AS g
    WHERE p.asset = g.asset AND p.partition_key = g.partition_key
      AND (p.newest_id = ANY(g.ids) OR g.succeeded_at IS NOT NULL OR g.taken_back);
    RETURN NULL;
END;
$$;

CREATE TRIGGER flowstone_partition_status_update
    AFTER UPDATE ON flowstone_materializations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flowstone_partition_status_updated();
