-- 0005_output_retention: `flowstone gc` records which output versions it deleted (apply with
-- `flowstone db upgrade`). A succeeded row keeps its output_ref (where the version was); a reader
-- of a collected version gets a clear error instead of a missing file.
ALTER TABLE flowstone_materializations ADD COLUMN output_deleted_at timestamptz;
