-- Auto-routing (0017_routes.sql): matching a rule's conditions, and the
-- dispatch of the change log to deliveries.

-- A DICOM wildcard pattern (* any run, ? one character) as a LIKE pattern.
CREATE OR REPLACE FUNCTION tessera_route_like(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT replace(replace(replace(replace(replace(p, '\', '\\'), '%', '\%'), '_', '\_'),
                           '*', '%'), '?', '_')
$$;

-- Whether the resource p_resource matches the conditions p_cond
-- ({"Tag": ["pattern", ...], ...}; "CallingAet" and "Origin" are the
-- instance's RemoteAET and Origin metadata): true when one of its instances
-- (or the instance itself) has, for every condition, a value matching one of
-- its patterns, the value taken from the instance's main tags or those of its
-- series, study or patient (a missing tag is ''). So "Modality CT" matches a
-- study that has a CT series. Values are compared as received, case included.
CREATE OR REPLACE FUNCTION tessera_route_matches(p_cond jsonb, p_resource bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE d AS (
        SELECT id, level FROM resources WHERE id = p_resource
        UNION ALL
        SELECT r.id, r.level FROM resources r JOIN d ON r.parent_id = d.id WHERE d.level < 3)
    SELECT EXISTS (
        SELECT 1
        FROM d
        JOIN instances i ON i.resource_id = d.id
        JOIN resources ri ON ri.id = i.resource_id
        JOIN series se ON se.resource_id = ri.parent_id
        JOIN resources rse ON rse.id = se.resource_id
        JOIN studies st ON st.resource_id = rse.parent_id
        JOIN resources rst ON rst.id = st.resource_id
        JOIN patients pa ON pa.resource_id = rst.parent_id
        WHERE d.level = 3 AND NOT EXISTS (
            SELECT 1 FROM jsonb_each(p_cond) c
            WHERE NOT EXISTS (
                SELECT 1 FROM jsonb_array_elements_text(c.value) pat
                WHERE coalesce(CASE c.key
                    WHEN 'CallingAet' THEN (SELECT m.value FROM metadata m
                                            WHERE m.resource_id = i.resource_id
                                              AND m.name = 'RemoteAET')
                    WHEN 'Origin' THEN (SELECT m.value FROM metadata m
                                        WHERE m.resource_id = i.resource_id
                                          AND m.name = 'Origin')
                    ELSE coalesce(i.main_tags->>c.key, se.main_tags->>c.key,
                                  st.main_tags->>c.key, pa.main_tags->>c.key)
                    END, '') LIKE tessera_route_like(pat))))
$$;

-- One dispatch pass: the dispatcher that gets the cursor row (the others skip
-- it and return -1 at once) reads up to p_limit changes after it, makes a
-- delivery for every enabled rule whose trigger and conditions match each
-- change, and moves the cursor past them, all in one transaction: each change
-- is dispatched once, and a dispatcher that dies dispatches nothing. A change
-- whose resource is gone (deleted since) matches nothing. Returns the
-- deliveries made, or -1 when another dispatcher holds the cursor.
CREATE OR REPLACE FUNCTION tessera_route_dispatch(p_limit integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cur bigint;
    last bigint;
    made bigint := 0;
    n bigint;
    ch record;
    rt record;
    res bigint;
BEGIN
    SELECT last_seq INTO cur FROM router_cursor FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    SELECT max(seq) INTO last
    FROM (SELECT seq FROM changes WHERE seq > cur ORDER BY seq LIMIT p_limit) s;
    IF last IS NULL THEN
        RETURN 0;
    END IF;
    FOR ch IN
        SELECT c.seq, c.change_type, c.level, c.public_id FROM changes c
        WHERE c.seq > cur AND c.seq <= last
          AND c.change_type IN (SELECT trigger FROM routes WHERE enabled)
        ORDER BY c.seq
    LOOP
        res := NULL;
        FOR rt IN SELECT * FROM routes WHERE enabled AND trigger = ch.change_type ORDER BY id LOOP
            IF res IS NULL THEN
                SELECT id INTO res FROM resources WHERE public_id = ch.public_id;
                EXIT WHEN res IS NULL;
            END IF;
            IF tessera_route_matches(rt.conditions, res) THEN
                INSERT INTO route_deliveries (route_id, change_seq, change_type, level,
                                              public_id, actions)
                VALUES (rt.id, ch.seq, ch.change_type, ch.level, ch.public_id, rt.actions)
                ON CONFLICT (route_id, change_seq) DO NOTHING;
                GET DIAGNOSTICS n = ROW_COUNT;
                made := made + n;
            END IF;
        END LOOP;
    END LOOP;
    UPDATE router_cursor SET last_seq = last;
    RETURN made;
END
$$;
