-- How many resources of each level have ever been removed, kept beside the
-- statistics counters (same 64 slots, same trigger). rest's paging cursors
-- (lib/base/offset_cursors.h) remember "offset N starts after id X" and use
-- it only while the level's removal count is the one they saw: a removal may
-- move every later offset, an insertion (a larger id) moves none before it.
ALTER TABLE statistics_counters
    ADD COLUMN patients_removed  bigint NOT NULL DEFAULT 0,
    ADD COLUMN studies_removed   bigint NOT NULL DEFAULT 0,
    ADD COLUMN series_removed    bigint NOT NULL DEFAULT 0,
    ADD COLUMN instances_removed bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION tessera_statistics_resources_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d bigint;
    r bigint;
    n0 bigint;
    n1 bigint;
    n2 bigint;
    n3 bigint;
BEGIN
    SELECT count(*) FILTER (WHERE level = 0), count(*) FILTER (WHERE level = 1),
           count(*) FILTER (WHERE level = 2), count(*) FILTER (WHERE level = 3)
    INTO n0, n1, n2, n3 FROM old_rows;
    IF n0 + n1 + n2 + n3 = 0 THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(sum(a.compressed_size), 0), coalesce(sum(a.uncompressed_size), 0) INTO d, r
    FROM old_rows o JOIN attachments a ON a.resource_id = o.id;
    UPDATE statistics_counters
    SET patients = patients - n0, studies = studies - n1, series = series - n2,
        instances = instances - n3, disk_size = disk_size - d, raw_size = raw_size - r,
        patients_removed = patients_removed + n0, studies_removed = studies_removed + n1,
        series_removed = series_removed + n2, instances_removed = instances_removed + n3
    WHERE slot = (txid_current() % 64)::smallint;
    RETURN NULL;
END $$;
