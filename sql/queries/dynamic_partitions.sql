-- name: dynamic_partitions_add
-- Adds keys to a dynamic partitions definition; a key that exists is kept as it is (concurrent
-- adds of one key leave one row). Rows are inserted in key order, so that two calls adding
-- overlapping keys lock them in the same order and never deadlock. The row count is the number
-- added.
INSERT INTO flowstone_dynamic_partitions (definition, partition_key, added_at, added_by)
SELECT %(definition)s, k.partition_key, coalesce(%(now)s::timestamptz, now()), %(actor)s
FROM unnest(%(keys)s::text[]) AS k (partition_key)
ORDER BY k.partition_key
ON CONFLICT (definition, partition_key) DO NOTHING;

-- name: dynamic_partitions_remove
-- Removes keys from a dynamic partitions definition (their materializations stay); the row
-- count is the number removed.
DELETE FROM flowstone_dynamic_partitions
WHERE definition = %(definition)s AND partition_key = ANY(%(keys)s::text[]);

-- name: dynamic_partitions_list
-- The keys of a dynamic partitions definition in the order they were added.
SELECT partition_key
FROM flowstone_dynamic_partitions
WHERE definition = %(definition)s
ORDER BY id;

-- name: dynamic_partitions_contains
-- Whether a dynamic partitions definition has this key.
SELECT EXISTS (SELECT 1 FROM flowstone_dynamic_partitions
               WHERE definition = %(definition)s AND partition_key = %(key)s) AS found;
