-- Attachment writes with Orthanc's revision check (see metadata.sql).
-- The file is already in the storage area when this runs; old_uuid is the
-- file the write replaced or removed, queued for the deleter in the same
-- transaction (a reader that saw the old row can still read its file).
-- If-Match is the whole ETag given back: its revision and its MD5 (the
-- stored one, of the uncompressed data) must both be the current ones.
-- (the signatures from before If-Match had to carry the MD5)
DROP FUNCTION IF EXISTS tessera_put_attachment(text, smallint, integer, uuid, bigint, text, integer);
DROP FUNCTION IF EXISTS tessera_delete_attachment(text, smallint, integer, integer);

CREATE OR REPLACE FUNCTION tessera_put_attachment(p_public_id text, p_level smallint, p_type integer,
                                       p_uuid uuid, p_size bigint, p_md5 text,
                                       p_if_match integer, p_if_match_md5 text,
                                       OUT status text, OUT revision integer, OUT old_uuid uuid)
LANGUAGE plpgsql AS $$
DECLARE
    rid bigint;
    cur record;
BEGIN
    SELECT id INTO rid FROM resources WHERE public_id = p_public_id AND level = p_level;
    IF rid IS NULL THEN
        status := 'unknown_resource';
        RETURN;
    END IF;
    SELECT a.revision, a.uuid, a.md5 INTO cur FROM attachments a
    WHERE a.resource_id = rid AND a.content_type = p_type FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO attachments (resource_id, content_type, uuid, compressed_size,
                                 uncompressed_size, md5, revision)
        VALUES (rid, p_type, p_uuid, p_size, p_size, p_md5, 0)
        ON CONFLICT (resource_id, content_type) DO NOTHING;
        IF NOT FOUND THEN
            status := 'conflict';
            RETURN;
        END IF;
        status := 'ok';
        revision := 0;
        RETURN;
    END IF;
    IF p_if_match IS NULL OR p_if_match <> cur.revision OR p_if_match_md5 IS DISTINCT FROM cur.md5 THEN
        status := 'conflict';
        RETURN;
    END IF;
    UPDATE attachments a SET uuid = p_uuid, compressed_size = p_size, uncompressed_size = p_size,
                             md5 = p_md5, revision = cur.revision + 1
    WHERE a.resource_id = rid AND a.content_type = p_type;
    status := 'ok';
    revision := cur.revision + 1;
    old_uuid := cur.uuid;
    INSERT INTO deletion_queue (uuid) VALUES (cur.uuid);
END
$$;

CREATE OR REPLACE FUNCTION tessera_delete_attachment(p_public_id text, p_level smallint, p_type integer,
                                          p_if_match integer, p_if_match_md5 text,
                                          OUT status text, OUT old_uuid uuid)
LANGUAGE plpgsql AS $$
DECLARE
    rid bigint;
    cur record;
BEGIN
    SELECT id INTO rid FROM resources WHERE public_id = p_public_id AND level = p_level;
    IF rid IS NULL THEN
        status := 'unknown_resource';
        RETURN;
    END IF;
    SELECT a.revision, a.uuid, a.md5 INTO cur FROM attachments a
    WHERE a.resource_id = rid AND a.content_type = p_type FOR UPDATE;
    IF NOT FOUND THEN
        status := 'not_found';
    ELSIF p_if_match IS NULL OR p_if_match <> cur.revision OR p_if_match_md5 IS DISTINCT FROM cur.md5 THEN
        status := 'conflict';
    ELSE
        DELETE FROM attachments a WHERE a.resource_id = rid AND a.content_type = p_type;
        status := 'ok';
        old_uuid := cur.uuid;
        INSERT INTO deletion_queue (uuid) VALUES (cur.uuid);
    END IF;
END
$$;
