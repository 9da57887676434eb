-- 0009_ui_reads: an index for the reads of the web UI and the operator CLI (apply with
-- `flowstone db upgrade`). The newest step of every partition (`report_assets`, `report_partitions`,
-- `newest_all`) is a DISTINCT ON (asset, partition_key) ORDER BY id DESC: with this index it is an
-- index-only scan in that order instead of a sort of the whole table (100,000 rows: ~200 ms -> ~30 ms
-- for the per-asset summary on the benchmark machine).
CREATE INDEX flowstone_materializations_newest_idx
    ON flowstone_materializations (asset, partition_key, id DESC) INCLUDE (status, finished_at, code_version);
