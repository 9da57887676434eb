-- 0015_memoized_skips: a memoized step is `skipped` and points at the materialization it reuses
-- (apply with `flowstone db upgrade`).
--
-- `memoized_from` is set on exactly the steps that memoization skipped (`@fs.asset(memoize=True)`):
-- their code version and input data versions equal those of the latest materialization, so the
-- function did not run and nothing was stored; the steps downstream read the reused row instead.
-- Such a skip is a success for the run (it releases the steps downstream and does not fail the
-- run); a skip without `memoized_from` (an upstream failed, a blocking check failed, a rejection)
-- still fails the run. Pruning keeps a reused row while a memoized skip points at it (the key is
-- NO ACTION, and pruning_steps looks for such skips through the partial index).

ALTER TABLE flowstone_materializations
    ADD COLUMN memoized_from bigint REFERENCES flowstone_materializations (id),
    ADD CONSTRAINT flowstone_materializations_memoized_skip
        CHECK (memoized_from IS NULL OR (status = 'skipped' AND memoized_from <> id));

CREATE INDEX flowstone_materializations_memoized_idx
    ON flowstone_materializations (memoized_from) WHERE memoized_from IS NOT NULL;
