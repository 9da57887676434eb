-- 0014_partition_status: one row per (asset, partition) holding the status of its newest step and
-- when it last succeeded, kept by triggers in the transaction that changes a step (apply with
-- `flowstone db upgrade`, workers stopped: the table is filled from every existing step once).
--
-- The status summary of all assets (`flowstone status`, the UI's asset list) counted the newest
-- step of every partition with DISTINCT ON over every step ever recorded: its cost grew with
-- history (seconds at 10 M steps). It now aggregates this table, whose size follows the number of
-- partitions, not the number of steps. Triggers keep it exact (no refresh, no lag):
--   * a statement's inserted steps become their partitions' newest (the highest id wins, so two
--     runs planning one partition concurrently leave the newer one);
--   * a step's move into or out of an ended status (succeeded, failed, skipped, rejected,
--     cancelled), or a change of its finish, changes its partition's row when it is the newest
--     step, and a success moves the partition's last success forward whichever step it is (a
--     success changed afterwards, which FlowStone never does, recomputes it);
--   * moves between unfinished statuses (pending, queued, running, waiting_approval: the claim,
--     a retry's wait) do not fire, so the claim pays nothing: while a partition's newest step is
--     unfinished its row says so, and readers take that step's current status from
--     flowstone_materializations by `newest_id` (one primary-key probe per unfinished partition);
--   * deleted steps (retention) recompute their partitions from what is left, and a partition
--     with no step left loses its row.

CREATE TABLE flowstone_partition_status (
    asset            text NOT NULL,
    partition_key    text NOT NULL,
    newest_id        bigint NOT NULL,
    status           text NOT NULL,  -- exact when ended; an unfinished one: read newest_id's
    finished_at      timestamptz,
    last_success_at  timestamptz,
    PRIMARY KEY (asset, partition_key)
);
-- The summary of one asset reads its (asset, status) groups from this index alone.
CREATE INDEX flowstone_partition_status_summary_idx
    ON flowstone_partition_status (asset, status) INCLUDE (finished_at, last_success_at);
-- The unfinished partitions (whose current status readers take from the newest step): few, and
-- found without reading the ended ones.
CREATE INDEX flowstone_partition_status_unfinished_idx
    ON flowstone_partition_status (asset, newest_id)
    WHERE status IN ('pending', 'queued', 'running', 'waiting_approval');
ALTER TABLE flowstone_partition_status
    SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01,
         fillfactor = 80);

INSERT INTO flowstone_partition_status
    (asset, partition_key, newest_id, status, finished_at, last_success_at)
SELECT n.asset, n.partition_key, n.id, n.status, n.finished_at, s.last_success_at
FROM (SELECT DISTINCT ON (m.asset, m.partition_key) m.asset, m.partition_key, m.id, m.status,
             m.finished_at
      FROM flowstone_materializations AS m
      ORDER BY m.asset, m.partition_key, m.id DESC) AS n
LEFT JOIN (SELECT l.asset, l.partition_key, max(l.finished_at) AS last_success_at
           FROM flowstone_materializations AS l
           WHERE l.status = 'succeeded'
           GROUP BY l.asset, l.partition_key) AS s
       ON s.asset = n.asset AND s.partition_key = n.partition_key;

CREATE FUNCTION flowstone_partition_status_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO flowstone_partition_status AS p
        (asset, partition_key, newest_id, status, finished_at, last_success_at)
    SELECT DISTINCT ON (n.asset, n.partition_key) n.asset, n.partition_key, n.id, n.status,
           n.finished_at,
           CASE WHEN n.status = 'succeeded' THEN n.finished_at END
    FROM inserted AS n
    ORDER BY n.asset, n.partition_key, n.id DESC
    ON CONFLICT (asset, partition_key) DO UPDATE
        SET newest_id = excluded.newest_id,
            status = excluded.status,
            finished_at = excluded.finished_at,
            last_success_at = greatest(p.last_success_at, excluded.last_success_at)
        WHERE excluded.newest_id > p.newest_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER flowstone_partition_status_insert
    AFTER INSERT ON flowstone_materializations
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION flowstone_partition_status_inserted();

CREATE FUNCTION flowstone_partition_status_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE flowstone_partition_status AS p
    SET status = CASE WHEN p.newest_id = NEW.id THEN NEW.status ELSE p.status END,
        finished_at = CASE WHEN p.newest_id = NEW.id THEN NEW.finished_at ELSE p.finished_at END,
        last_success_at = CASE
            WHEN OLD.status = 'succeeded'  -- a success taken back or moved (not done by FlowStone)
                THEN (SELECT max(l.finished_at) FROM flowstone_materializations AS l
                      WHERE l.asset = NEW.asset AND l.partition_key = NEW.partition_key
                        AND l.status = 'succeeded')
            WHEN NEW.status = 'succeeded' THEN greatest(p.last_success_at, NEW.finished_at)
            ELSE p.last_success_at END
    WHERE p.asset = NEW.asset AND p.partition_key = NEW.partition_key
      AND (p.newest_id = NEW.id OR NEW.status = 'succeeded' OR OLD.status = 'succeeded');
    RETURN NULL;
END;
$$;

CREATE TRIGGER flowstone_partition_status_update
    AFTER UPDATE OF status, finished_at ON flowstone_materializations
    FOR EACH ROW
    WHEN ((OLD.status IS DISTINCT FROM NEW.status
           AND (OLD.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')
                OR NEW.status IN ('succeeded', 'failed', 'skipped', 'rejected', 'cancelled')))
          OR OLD.finished_at IS DISTINCT FROM NEW.finished_at)
    EXECUTE FUNCTION flowstone_partition_status_updated();

CREATE FUNCTION flowstone_partition_status_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM flowstone_partition_status AS p
    USING (SELECT DISTINCT d.asset, d.partition_key FROM deleted AS d) AS g
    WHERE p.asset = g.asset AND p.partition_key = g.partition_key
      AND NOT EXISTS (SELECT 1 FROM flowstone_materializations AS m
                      WHERE m.asset = g.asset AND m.partition_key = g.partition_key);
    UPDATE flowstone_partition_status AS p
    SET newest_id = n.id, status = n.status, finished_at = n.finished_at,
        last_success_at = s.finished_at
    FROM (SELECT DISTINCT d.asset, d.partition_key FROM deleted AS d) AS g
    CROSS JOIN LATERAL (SELECT m.id, m.status, m.finished_at
                        FROM flowstone_materializations AS m
                        WHERE m.asset = g.asset AND m.partition_key = g.partition_key
                        ORDER BY m.id DESC
                        LIMIT 1) AS n
    LEFT JOIN LATERAL (SELECT l.finished_at
                       FROM flowstone_materializations AS l
                       WHERE l.asset = g.asset AND l.partition_key = g.partition_key
                         AND l.status = 'succeeded'
                       ORDER BY l.finished_at DESC, l.id DESC
                       LIMIT 1) AS s ON true
    WHERE p.asset = g.asset AND p.partition_key = g.partition_key;
    RETURN NULL;
END;
$$;

CREATE TRIGGER flowstone_partition_status_delete
    AFTER DELETE ON flowstone_materializations
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION flowstone_partition_status_deleted();
