-- /statistics in O(1): counts and sizes kept in counters maintained by triggers,
-- instead of counting every row of resources and summing every attachment at
-- each request (seconds at ten million instances).
--
-- The counters are spread over 64 rows so that concurrent writers rarely wait
-- for each other: a statement adds its delta to the row its transaction id
-- picks, and the row lock is held until that transaction commits, so two
-- writers collide only when their ids fall on the same row. A read sums the
-- 64 rows. Triggers are statement-level with transition tables: one UPDATE per
-- statement, whatever its number of rows.
--
-- What is counted is what /statistics has always shown: the resources in the
-- index, and the sizes of the attachments of live resources. A deletion removes
-- resource rows at once and leaves their attachment rows to the deleter
-- (0007_flat_delete.sql), so the sizes are taken off when the resources go,
-- and the deleter's later removal of those attachment rows changes nothing.
CREATE TABLE statistics_counters (
    slot       smallint PRIMARY KEY,
    patients   bigint NOT NULL DEFAULT 0,
    studies    bigint NOT NULL DEFAULT 0,
    series     bigint NOT NULL DEFAULT 0,
    instances  bigint NOT NULL DEFAULT 0,
    disk_size  bigint NOT NULL DEFAULT 0,
    raw_size   bigint NOT NULL DEFAULT 0
);
INSERT INTO statistics_counters (slot) SELECT generate_series(0, 63);

CREATE FUNCTION tessera_statistics_add(p_patients bigint, p_studies bigint, p_series bigint,
                                       p_instances bigint, p_disk bigint, p_raw bigint)
RETURNS void LANGUAGE sql AS $$
    UPDATE statistics_counters
    SET patients = patients + p_patients, studies = studies + p_studies,
        series = series + p_series, instances = instances + p_instances,
        disk_size = disk_size + p_disk, raw_size = raw_size + p_raw
    WHERE slot = (txid_current() % 64)::smallint
$$;

CREATE FUNCTION tessera_statistics_resources_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tessera_statistics_add(count(*) FILTER (WHERE level = 0), count(*) FILTER (WHERE level = 1),
                                   count(*) FILTER (WHERE level = 2), count(*) FILTER (WHERE level = 3), 0, 0)
    FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION tessera_statistics_resources_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d bigint;
    r bigint;
BEGIN
    SELECT coalesce(sum(a.compressed_size), 0), coalesce(sum(a.uncompressed_size), 0) INTO d, r
    FROM old_rows o JOIN attachments a ON a.resource_id = o.id;
    PERFORM tessera_statistics_add(-count(*) FILTER (WHERE level = 0), -count(*) FILTER (WHERE level = 1),
                                   -count(*) FILTER (WHERE level = 2), -count(*) FILTER (WHERE level = 3), -d, -r)
    FROM old_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;

-- Attachment rows count while their resource is in the index.
CREATE FUNCTION tessera_statistics_attachments_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tessera_statistics_add(0, 0, 0, 0, sum(n.compressed_size)::bigint,
                                   sum(n.uncompressed_size)::bigint)
    FROM new_rows n WHERE EXISTS (SELECT 1 FROM resources WHERE id = n.resource_id)
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION tessera_statistics_attachments_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tessera_statistics_add(0, 0, 0, 0, -sum(o.compressed_size)::bigint,
                                   -sum(o.uncompressed_size)::bigint)
    FROM old_rows o WHERE EXISTS (SELECT 1 FROM resources WHERE id = o.resource_id)
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION tessera_statistics_attachments_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tessera_statistics_add(0, 0, 0, 0, sum(n.compressed_size - o.compressed_size)::bigint,
                                   sum(n.uncompressed_size - o.uncompressed_size)::bigint)
    FROM new_rows n JOIN old_rows o ON (o.resource_id, o.content_type) = (n.resource_id, n.content_type)
    WHERE EXISTS (SELECT 1 FROM resources WHERE id = n.resource_id)
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE TRIGGER statistics_resources_inserted AFTER INSERT ON resources
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tessera_statistics_resources_inserted();
CREATE TRIGGER statistics_resources_deleted AFTER DELETE ON resources
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tessera_statistics_resources_deleted();
CREATE TRIGGER statistics_attachments_inserted AFTER INSERT ON attachments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tessera_statistics_attachments_inserted();
CREATE TRIGGER statistics_attachments_deleted AFTER DELETE ON attachments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tessera_statistics_attachments_deleted();
CREATE TRIGGER statistics_attachments_updated AFTER UPDATE ON attachments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tessera_statistics_attachments_updated();

-- The counters start from what is there. SHARE locks keep writers of an older
-- version still running out until this migration commits, so nothing is counted
-- twice or missed. The sizes of resources already removed and not yet purged
-- are left out as tessera_purge_pending_sizes() does (inlined: the functions in
-- db/functions/ are applied after the migrations).
LOCK TABLE resources, attachments IN SHARE MODE;
UPDATE statistics_counters c SET
    patients = s.patients, studies = s.studies, series = s.series, instances = s.instances,
    disk_size = s.disk - p.disk, raw_size = s.raw - p.raw
FROM (SELECT count(*) FILTER (WHERE level = 0) AS patients, count(*) FILTER (WHERE level = 1) AS studies,
             count(*) FILTER (WHERE level = 2) AS series, count(*) FILTER (WHERE level = 3) AS instances,
             (SELECT coalesce(sum(compressed_size), 0) FROM attachments)::bigint AS disk,
             (SELECT coalesce(sum(uncompressed_size), 0) FROM attachments)::bigint AS raw
      FROM resources) s,
     (SELECT coalesce(sum(a.compressed_size), 0)::bigint AS disk,
             coalesce(sum(a.uncompressed_size), 0)::bigint AS raw
      FROM deletion_purge d, unnest(d.resource_ids) r(id)
      JOIN attachments a ON a.resource_id = r.id) p
WHERE c.slot = 0;
