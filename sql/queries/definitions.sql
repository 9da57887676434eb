-- name: definitions_state_get
-- Returns the published definitions set's hash, format, asset count, schedules and sensors, or
-- nothing when none was ever published.
SELECT hash, format, assets, automation, published_by, updated_at
FROM flowstone_definitions_state
WHERE id;

-- name: definitions_lock
-- Serializes publishers (two processes starting with different definitions): a transaction-level
-- advisory lock on a fixed key.
SELECT pg_advisory_xact_lock(hashtextextended('flowstone_definitions', 0)) AS locked;

-- name: definitions_upsert
-- Writes every asset of a published set (one row each) as present, with its position in the
-- topological order.
INSERT INTO flowstone_definitions AS d (asset, group_name, description, deps, partitions, queue,
                                        code_version, io_manager, owners, tags, spec, position,
                                        present, definitions_hash, updated_at)
SELECT s.asset, s.group_name, s.description,
       ARRAY(SELECT jsonb_array_elements_text(s.deps)), s.partitions, s.queue, s.code_version,
       s.io_manager, ARRAY(SELECT jsonb_array_elements_text(s.owners)), s.tags, s.spec, s.position,
       true, %(hash)s, coalesce(%(now)s::timestamptz, now())
FROM jsonb_to_recordset(%(rows)s::jsonb) AS s(asset text, group_name text, description text, deps jsonb,
                                             partitions jsonb, queue text, code_version text,
                                             io_manager text, owners jsonb, tags jsonb, spec jsonb,
                                             position integer)
ON CONFLICT (asset) DO UPDATE
SET group_name = excluded.group_name, description = excluded.description, deps = excluded.deps,
    partitions = excluded.partitions, queue = excluded.queue, code_version = excluded.code_version,
    io_manager = excluded.io_manager, owners = excluded.owners, tags = excluded.tags,
    spec = excluded.spec, position = excluded.position, present = true,
    definitions_hash = excluded.definitions_hash, updated_at = excluded.updated_at;

-- name: definitions_retire
-- Marks absent the assets a newly published set does not have.
UPDATE flowstone_definitions
SET present = false, updated_at = coalesce(%(now)s::timestamptz, now())
WHERE present AND NOT (asset = ANY(%(assets)s::text[]));

-- name: definitions_state_set
-- Records the published set's hash, format, size, schedules and sensors.
INSERT INTO flowstone_definitions_state (id, hash, format, assets, automation, published_by, updated_at)
VALUES (true, %(hash)s, %(format)s, %(assets)s, %(automation)s, %(published_by)s,
        coalesce(%(now)s::timestamptz, now()))
ON CONFLICT (id) DO UPDATE
SET hash = excluded.hash, format = excluded.format, assets = excluded.assets,
    automation = excluded.automation, published_by = excluded.published_by,
    updated_at = excluded.updated_at;

-- name: definitions_list
-- Returns the specs of the present assets in their published (topological) order.
SELECT spec FROM flowstone_definitions WHERE present ORDER BY position;
