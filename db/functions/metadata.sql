-- Metadata writes with Orthanc's revision check, each in one round trip.
-- Revisions start at 0 (Orthanc's first ETag is "0-..."); every change adds 1.

-- status: 'ok', 'unknown_resource', 'conflict' (wrong or missing If-Match:
-- HTTP 409, as Orthanc with CheckRevisions), 'not_found' (delete of an absent name).
-- p_if_match NULL means the header was absent; p_if_match_md5 is the MD5 part
-- of the ETag given back, which must be the current value's (as in Orthanc). The row lock of SELECT ... FOR
-- UPDATE makes concurrent writers of one name queue; each then sees the
-- revision left by the one before it, so every write is applied once or refused.
-- (the signatures from before If-Match had to carry the MD5)
DROP FUNCTION IF EXISTS tessera_put_metadata(text, smallint, text, text, integer);
DROP FUNCTION IF EXISTS tessera_delete_metadata(text, smallint, text, integer);

CREATE OR REPLACE FUNCTION tessera_put_metadata(p_public_id text, p_level smallint, p_name text,
                                     p_value text, p_if_match integer, p_if_match_md5 text,
                                     OUT status text, OUT revision integer)
LANGUAGE plpgsql AS $$
DECLARE
    rid bigint;
    cur integer;
    cur_md5 text;
BEGIN
    SELECT id INTO rid FROM resources WHERE public_id = p_public_id AND level = p_level;
    IF rid IS NULL THEN
        status := 'unknown_resource';
        RETURN;
    END IF;
    SELECT m.revision, md5(m.value) INTO cur, cur_md5 FROM metadata m
    WHERE m.resource_id = rid AND m.name = p_name FOR UPDATE;
    IF cur IS NULL THEN
        INSERT INTO metadata (resource_id, name, value, revision)
        VALUES (rid, p_name, p_value, 0)
        ON CONFLICT (resource_id, name) DO NOTHING;
        IF NOT FOUND THEN
            status := 'conflict'; -- created by a concurrent writer first
            RETURN;
        END IF;
        status := 'ok';
        revision := 0;
        RETURN;
    END IF;
    IF p_if_match IS NULL OR p_if_match <> cur OR p_if_match_md5 IS DISTINCT FROM cur_md5 THEN
        status := 'conflict';
        revision := cur;
        RETURN;
    END IF;
    UPDATE metadata m SET value = p_value, revision = cur + 1
    WHERE m.resource_id = rid AND m.name = p_name;
    status := 'ok';
    revision := cur + 1;
END
$$;

CREATE OR REPLACE FUNCTION tessera_delete_metadata(p_public_id text, p_level smallint, p_name text,
                                        p_if_match integer, p_if_match_md5 text,
                                        OUT status text)
LANGUAGE plpgsql AS $$
DECLARE
    rid bigint;
    cur integer;
    cur_md5 text;
BEGIN
    SELECT id INTO rid FROM resources WHERE public_id = p_public_id AND level = p_level;
    IF rid IS NULL THEN
        status := 'unknown_resource';
        RETURN;
    END IF;
    SELECT m.revision, md5(m.value) INTO cur, cur_md5 FROM metadata m
    WHERE m.resource_id = rid AND m.name = p_name FOR UPDATE;
    IF cur IS NULL THEN
        status := 'not_found';
    ELSIF p_if_match IS NULL OR p_if_match <> cur OR p_if_match_md5 IS DISTINCT FROM cur_md5 THEN
        status := 'conflict';
    ELSE
        DELETE FROM metadata m WHERE m.resource_id = rid AND m.name = p_name;
        status := 'ok';
    END IF;
END
$$;
