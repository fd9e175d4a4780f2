-- Deletion of resources (DELETE /{level}/{id}, /tools/bulk-delete): one
-- transaction removes the resource, its descendants and the ancestors it
-- leaves empty from the index, hands their metadata and attachment rows to
-- the deleter (deletion_purge: it removes them and queues their files), and
-- appends a Deleted change for each removed resource that a client named or
-- saw disappear (the resource and its emptied ancestors; not one per
-- descendant), or empties the change log when nothing is left. Its cost is a few set-based statements whatever the size of
-- the subtree (migration 0007 says why there are no foreign keys to cascade).
--
-- Concurrency (the caller runs it READ COMMITTED: every statement takes a new
-- snapshot): the resource and its ancestors are locked FOR UPDATE top-down,
-- the same order in which the write path takes them FOR KEY SHARE, so an
-- instance arriving during the deletion either commits first (and is deleted
-- with the rest: the subtree is read after the locks) or waits and then
-- recreates its parents. Deadlocks that remain are replayed by lib/db.

DROP FUNCTION IF EXISTS tessera_queue_subtree_files(bigint);

-- Removes the resource p_root and its descendants from the index: resource
-- and per-level rows now, metadata and attachments (and files) later by the
-- deleter. Returns the number of resources removed (0: already gone).
CREATE OR REPLACE FUNCTION tessera_remove_subtree(p_root bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    lvl smallint;
BEGIN
    SELECT level INTO lvl FROM resources WHERE id = p_root;
    IF lvl IS NULL THEN
        RETURN 0;
    END IF;
    WITH RECURSIVE sub(id) AS (
        SELECT p_root
        UNION ALL SELECT r.id FROM resources r JOIN sub ON r.parent_id = sub.id)
    SELECT array_agg(id) INTO ids FROM sub;
    -- only the levels at and below the root's hold rows of the subtree;
    -- instances is always one of them (levels are 0 to 3)
    DELETE FROM instances WHERE resource_id = ANY (ids);
    IF lvl <= 2 THEN DELETE FROM series WHERE resource_id = ANY (ids); END IF;
    IF lvl <= 1 THEN DELETE FROM studies WHERE resource_id = ANY (ids); END IF;
    IF lvl = 0 THEN DELETE FROM patients WHERE resource_id = ANY (ids); END IF;
    DELETE FROM resources WHERE id = ANY (ids);
    INSERT INTO deletion_purge (resource_ids) VALUES (ids);
    RETURN cardinality(ids);
END
$$;

-- The deleter's first step: takes one entry of deletion_purge (SKIP LOCKED:
-- deleters share the table), removes the metadata and attachment rows of up
-- to p_limit of its resources and queues the attachments' files, in the
-- caller's transaction. Returns the files queued, or NULL when no entry was
-- waiting.
CREATE OR REPLACE FUNCTION tessera_purge_removed(p_limit integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    entry record;
    batch bigint[];
    queued bigint;
BEGIN
    SELECT id, resource_ids INTO entry FROM deletion_purge
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF entry.id IS NULL THEN
        RETURN NULL;
    END IF;
    batch := entry.resource_ids[1:p_limit];
    WITH gone AS (DELETE FROM attachments WHERE resource_id = ANY (batch) RETURNING uuid),
         q AS (INSERT INTO deletion_queue (uuid) SELECT uuid FROM gone RETURNING 1)
    SELECT count(*) INTO queued FROM q;
    DELETE FROM metadata WHERE resource_id = ANY (batch);
    DELETE FROM labels WHERE resource_id = ANY (batch);
    IF cardinality(entry.resource_ids) <= p_limit THEN
        DELETE FROM deletion_purge WHERE id = entry.id;
    ELSE
        UPDATE deletion_purge SET resource_ids = resource_ids[p_limit + 1:]
        WHERE id = entry.id;
    END IF;
    RETURN queued;
END
$$;

-- status: 'deleted' or 'unknown_resource'. remaining_level/remaining_id: the
-- nearest ancestor that still exists (Orthanc's RemainingAncestor), NULL when
-- the whole patient went. removed: resources removed (their files are queued
-- by the deleter: tessera_purge_removed).
DROP FUNCTION IF EXISTS tessera_delete_resource(text, smallint);
CREATE FUNCTION tessera_delete_resource(p_public_id text, p_level smallint,
                                        OUT status text,
                                        OUT remaining_level smallint,
                                        OUT remaining_id text,
                                        OUT removed bigint)
LANGUAGE plpgsql AS $$
DECLARE
    target bigint;
    chain bigint[];
    anc record;
BEGIN
    removed := 0;
    SELECT id INTO target FROM resources WHERE public_id = p_public_id AND level = p_level;
    IF target IS NULL THEN
        status := 'unknown_resource';
        RETURN;
    END IF;
    -- ancestors first, then the resource: the write path's order
    WITH RECURSIVE up(id, parent_id) AS (
        SELECT id, parent_id FROM resources WHERE id = target
        UNION ALL SELECT r.id, r.parent_id FROM resources r JOIN up ON r.id = up.parent_id)
    SELECT array_agg(id) INTO chain FROM up;
    PERFORM 1 FROM resources WHERE id = ANY (chain) ORDER BY level FOR UPDATE;
    -- a concurrent deletion may have taken it while we waited
    IF NOT EXISTS (SELECT 1 FROM resources WHERE id = target) THEN
        status := 'unknown_resource';
        RETURN;
    END IF;

    removed := tessera_remove_subtree(target);
    INSERT INTO changes (change_type, level, public_id) VALUES ('Deleted', p_level, p_public_id);

    -- ancestors left without children go too, nearest first
    FOR anc IN SELECT r.id, r.level, r.public_id FROM resources r
               WHERE r.id = ANY (chain) AND r.id <> target ORDER BY r.level DESC LOOP
        IF EXISTS (SELECT 1 FROM resources c WHERE c.parent_id = anc.id) THEN
            remaining_level := anc.level;
            remaining_id := anc.public_id;
            EXIT;
        END IF;
        removed := removed + tessera_remove_subtree(anc.id);
        INSERT INTO changes (change_type, level, public_id) VALUES ('Deleted', anc.level, anc.public_id);
    END LOOP;
    -- The last patient gone, the change log is emptied as Orthanc's is; Seq
    -- goes on from change_counter, which keeps the last one given (/changes
    -- answers it as Last). One statement, so one snapshot: a resource stored
    -- meanwhile keeps its changes, or they are not visible here yet.
    IF remaining_id IS NULL THEN
        DELETE FROM changes WHERE NOT EXISTS (SELECT 1 FROM resources);
    END IF;
    status := 'deleted';
END
$$;

-- The deletion queue's state for the status route and metrics. length counts
-- the queued files and the files of removed resources not yet purged (the
-- deleter queues those first); oldest_age_s is the age of the oldest of both.
CREATE OR REPLACE FUNCTION tessera_deletion_queue_status(OUT length bigint,
                                                         OUT oldest_age_s double precision,
                                                         OUT failing bigint,
                                                         OUT removal_rate double precision)
LANGUAGE sql STABLE AS $$
    -- rate: files removed since the start of the previous minute, per second
    SELECT (SELECT count(*) FROM deletion_queue)
           + (SELECT count(*) FROM deletion_purge p, unnest(p.resource_ids) r(id)
              JOIN attachments a ON a.resource_id = r.id),
           (SELECT coalesce(extract(epoch FROM now() - least(
                       (SELECT min(enqueued_at) FROM deletion_queue),
                       (SELECT min(enqueued_at) FROM deletion_purge)))::float8, 0)),
           (SELECT count(*) FROM deletion_queue WHERE attempts > 0),
           (SELECT coalesce(sum(removed), 0)::float8
                   / (60 + extract(epoch FROM now() - date_trunc('minute', now())))::float8
            FROM deletion_stats WHERE minute >= date_trunc('minute', now()) - interval '1 minute')
$$;

-- Sizes of the attachments of removed resources not yet purged: /statistics
-- subtracts them so that it counts only live data.
CREATE OR REPLACE FUNCTION tessera_purge_pending_sizes(OUT disk bigint, OUT raw bigint)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(a.compressed_size), 0)::bigint, coalesce(sum(a.uncompressed_size), 0)::bigint
    FROM deletion_purge p, unnest(p.resource_ids) r(id)
    JOIN attachments a ON a.resource_id = r.id
$$;
