-- Deletion of resources (DELETE /{level}/{id}, /tools/bulk-delete): one
-- transaction removes the resource, its descendants and the ancestors it
-- leaves empty from the index, queues every file they referenced for the
-- deleter service, and appends a Deleted change for each removed resource
-- that a client named or saw disappear (the resource and its emptied
-- ancestors; not one per descendant, so that deleting a study of 10,000
-- instances stays one quick transaction).
--
-- Concurrency: the resource and its ancestors are locked FOR UPDATE top-down,
-- the same order in which the write path takes them FOR KEY SHARE, so an
-- instance arriving during the deletion either commits first (and is deleted
-- with the rest: the subtree is read after the locks, with a new snapshot) or
-- waits and then recreates its parents. Deadlocks that remain are replayed by
-- lib/db.

-- Queues the files of every attachment of the subtree rooted at p_root.
-- Returns the number of files queued.
CREATE OR REPLACE FUNCTION tessera_queue_subtree_files(p_root bigint) RETURNS bigint
LANGUAGE sql AS $$
    WITH RECURSIVE sub(id) AS (
        SELECT p_root
        UNION ALL SELECT r.id FROM resources r JOIN sub ON r.parent_id = sub.id),
    queued AS (
        INSERT INTO deletion_queue (uuid)
        SELECT a.uuid FROM attachments a JOIN sub ON a.resource_id = sub.id
        RETURNING 1)
    SELECT count(*) FROM queued
$$;

-- status: 'deleted' or 'unknown_resource'. remaining_level/remaining_id: the
-- nearest ancestor that still exists (Orthanc's RemainingAncestor), NULL when
-- the whole patient went. files: files queued for the deleter.
CREATE OR REPLACE FUNCTION tessera_delete_resource(p_public_id text, p_level smallint,
                                                   OUT status text,
                                                   OUT remaining_level smallint,
                                                   OUT remaining_id text,
                                                   OUT files bigint)
LANGUAGE plpgsql AS $$
DECLARE
    target bigint;
    chain bigint[];
    anc record;
    gone bigint;
BEGIN
    files := 0;
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

    files := tessera_queue_subtree_files(target);
    INSERT INTO changes (change_type, level, public_id) VALUES ('Deleted', p_level, p_public_id);
    DELETE FROM resources WHERE id = target;

    -- ancestors left without children go too, nearest first
    FOR anc IN SELECT r.id, r.level, r.public_id FROM resources r
               WHERE r.id = ANY (chain) AND r.id <> target ORDER BY r.level DESC LOOP
        IF EXISTS (SELECT 1 FROM resources c WHERE c.parent_id = anc.id) THEN
            remaining_level := anc.level;
            remaining_id := anc.public_id;
            EXIT;
        END IF;
        gone := tessera_queue_subtree_files(anc.id);
        files := files + gone;
        INSERT INTO changes (change_type, level, public_id) VALUES ('Deleted', anc.level, anc.public_id);
        DELETE FROM resources WHERE id = anc.id;
    END LOOP;
    status := 'deleted';
END
$$;

-- The deletion queue's state for the status route and metrics.
CREATE OR REPLACE FUNCTION tessera_deletion_queue_status(OUT length bigint,
                                                         OUT oldest_age_s double precision,
                                                         OUT failing bigint,
                                                         OUT removal_rate double precision)
LANGUAGE sql STABLE AS $$
    -- rate: files removed since the start of the previous minute, per second
    SELECT (SELECT count(*) FROM deletion_queue),
           (SELECT coalesce(extract(epoch FROM now() - min(enqueued_at))::float8, 0) FROM deletion_queue),
           (SELECT count(*) FROM deletion_queue WHERE attempts > 0),
           (SELECT coalesce(sum(removed), 0)::float8
                   / (60 + extract(epoch FROM now() - date_trunc('minute', now())))::float8
            FROM deletion_stats WHERE minute >= date_trunc('minute', now()) - interval '1 minute')
$$;
