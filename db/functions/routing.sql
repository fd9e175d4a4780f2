-- Auto-routing (0017_routes.sql): matching a rule's conditions, and the
-- dispatch of the change log to deliveries.

-- A DICOM wildcard pattern (* any run, ? one character) as a LIKE pattern.
CREATE OR REPLACE FUNCTION tessera_route_like(p text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT replace(replace(replace(replace(replace(p, '\', '\\'), '%', '\%'), '_', '\_'),
                           '*', '%'), '?', '_')
$$;

-- Whether one instance's tags (its main tags over those of its series, study
-- and patient: p_tags) and reception metadata satisfy every condition of p_cond
-- ({"Tag": ["pattern", ...], ...}; "CallingAet" and "Origin" are the
-- instance's RemoteAET and Origin metadata). A missing value is ''. Values are
-- compared as received, case included.
CREATE OR REPLACE FUNCTION tessera_route_tags_match(p_cond jsonb, p_tags jsonb, p_instance bigint)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (
        SELECT 1 FROM jsonb_each(p_cond) c
        WHERE NOT EXISTS (
            SELECT 1 FROM jsonb_array_elements_text(c.value) pat
            WHERE coalesce(CASE c.key
                WHEN 'CallingAet' THEN (SELECT m.value FROM metadata m
                                        WHERE m.resource_id = p_instance AND m.name = 'RemoteAET')
                WHEN 'Origin' THEN (SELECT m.value FROM metadata m
                                    WHERE m.resource_id = p_instance AND m.name = 'Origin')
                ELSE p_tags->>c.key
                END, '') LIKE tessera_route_like(pat)))
$$;

-- An instance's main tags with those of its series, study and patient, as
-- a rule's conditions see them (the instance's own win), by the instance's
-- id or public id: the one place that walks the chain, for
-- tessera_route_matches (one instance) and tessera_route_dispatch (a batch).
-- A view is inlined into the statement that reads it, so each keeps its own
-- plan. (A migration that changes a column it reads drops it first.)
CREATE OR REPLACE VIEW tessera_instance_route_tags AS
    SELECT ri.id AS resource_id, ri.public_id,
           coalesce(pa.main_tags, '{}') || coalesce(st.main_tags, '{}')
           || coalesce(se.main_tags, '{}') || i.main_tags AS tags
    FROM resources ri
    JOIN instances i ON i.resource_id = ri.id
    JOIN resources rse ON rse.id = ri.parent_id
    JOIN series se ON se.resource_id = rse.id
    JOIN resources rst ON rst.id = rse.parent_id
    JOIN studies st ON st.resource_id = rst.id
    LEFT JOIN patients pa ON pa.resource_id = rst.parent_id
    WHERE ri.level = 3;

-- Whether the resource p_resource matches the conditions p_cond: true when one
-- of its instances (or the instance itself) does (tessera_route_tags_match), so
-- "Modality CT" matches a study that has a CT series. Series by series: the
-- tags of the series and its ancestors are read once per series, and each
-- statement joins few tables. plpgsql, not sql: the plans are cached per
-- session (one nine-way join in an SQL function took 60 ms to plan on every
-- call, once per change and rule in a dispatch).
CREATE OR REPLACE FUNCTION tessera_route_matches(p_cond jsonb, p_resource bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    lvl smallint;
    ser bigint;
    above jsonb;
BEGIN
    SELECT level INTO lvl FROM resources WHERE id = p_resource;
    IF lvl IS NULL THEN
        RETURN false;
    ELSIF lvl = 3 THEN
        -- one instance (NewInstance, the most frequent): one statement
        RETURN coalesce((
            SELECT tessera_route_tags_match(p_cond, v.tags, v.resource_id)
            FROM tessera_instance_route_tags v WHERE v.resource_id = p_resource), false);
    END IF;
    FOR ser IN
        SELECT r.parent_id FROM resources r WHERE lvl = 3 AND r.id = p_resource
        UNION ALL SELECT p_resource WHERE lvl = 2
        UNION ALL SELECT r.id FROM resources r WHERE lvl = 1 AND r.parent_id = p_resource
        UNION ALL SELECT se.id FROM resources st JOIN resources se ON se.parent_id = st.id
                  WHERE lvl = 0 AND st.parent_id = p_resource
    LOOP
        SELECT coalesce(pa.main_tags, '{}') || coalesce(st.main_tags, '{}')
               || coalesce(se.main_tags, '{}')
        INTO above
        FROM resources rse
        JOIN series se ON se.resource_id = rse.id
        JOIN resources rst ON rst.id = rse.parent_id
        JOIN studies st ON st.resource_id = rst.id
        JOIN patients pa ON pa.resource_id = rst.parent_id
        WHERE rse.id = ser;
        IF EXISTS (
            SELECT 1 FROM resources ri JOIN instances i ON i.resource_id = ri.id
            WHERE ri.parent_id = ser AND (lvl <> 3 OR ri.id = p_resource)
              AND tessera_route_tags_match(p_cond, coalesce(above, '{}') || i.main_tags,
                                           i.resource_id)) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;

-- The Lua scripts' callback of a change type (Orthanc's names).
CREATE OR REPLACE FUNCTION tessera_lua_callback(p_change_type text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_change_type WHEN 'NewInstance' THEN 'OnStoredInstance'
                              ELSE 'On' || p_change_type END
$$;

DROP FUNCTION IF EXISTS tessera_route_dispatch(integer);

-- One dispatch pass: the dispatcher that gets the cursor row (the others skip
-- it and return -1 at once) reads up to p_limit changes after it, makes a
-- delivery for every enabled rule whose trigger and conditions match each
-- change, and moves the cursor past them, all in one transaction: each change
-- is dispatched once, and a dispatcher that dies dispatches nothing. A change
-- whose resource is gone (deleted since) matches nothing. Returns the
-- deliveries made, or -1 when another dispatcher holds the cursor.
-- p_lua: the change types the dispatcher's Lua scripts have a callback for
-- (TESSERA_LUA_SCRIPTS, the same on every jobs process): each such change gets
-- one delivery of route 'lua' whose one step is the callback.
-- Set by set: one statement per rule for the instance changes of the batch
-- (NewInstance: a routed backlog is mostly these), one for the Lua
-- deliveries; only the larger resources (Stable*) are matched one by one. A
-- loop over 1,000 changes took 1.5 s (tessera_route_tags_match, an SQL
-- function, is planned again in each statement that calls it: once per change
-- and rule in a loop, once per batch here).
CREATE OR REPLACE FUNCTION tessera_route_dispatch(p_limit integer, p_lua text[])
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cur bigint;
    last bigint;
    made bigint := 0;
    n bigint;
    ch record;
    rt record;
BEGIN
    -- nothing new since the cursor: return without locking its row (a lock
    -- would make every idle pass of every router a transaction to flush)
    IF (SELECT last_seq FROM router_cursor) >= (SELECT last_seq FROM change_counter) THEN
        RETURN 0;
    END IF;
    SELECT last_seq INTO cur FROM router_cursor FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    SELECT max(seq) INTO last
    FROM (SELECT seq FROM changes WHERE seq > cur ORDER BY seq LIMIT p_limit) s;
    IF last IS NULL THEN
        RETURN 0;
    END IF;
    IF cardinality(p_lua) > 0 THEN
        INSERT INTO route_deliveries (route_id, change_seq, change_type, level, public_id, actions)
        SELECT 'lua', c.seq, c.change_type, c.level, c.public_id,
               jsonb_build_array(jsonb_build_object(
                   'Type', 'Lua', 'Callback', tessera_lua_callback(c.change_type)))
        FROM changes c
        WHERE c.seq > cur AND c.seq <= last AND c.change_type = ANY (p_lua)
          -- a probe of the public id index per change (OFFSET 0 keeps the
          -- EXISTS a subplan): not a semi-join that may read every resource
          AND EXISTS (SELECT 1 FROM resources r WHERE r.public_id = c.public_id OFFSET 0)
        ORDER BY c.seq
        ON CONFLICT (route_id, change_seq) DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        made := made + n;
    END IF;
    FOR rt IN
        SELECT * FROM routes
        WHERE enabled AND trigger IN (SELECT DISTINCT c.change_type FROM changes c
                                      WHERE c.seq > cur AND c.seq <= last)
        ORDER BY id
    LOOP
        -- the instances of the batch: one statement (tessera_route_matches'
        -- instance case, set-wise). Each change's instance is looked up by
        -- its public id, then its chain by primary keys: the LATERAL with
        -- OFFSET 0 keeps that order. Left to itself, with series and studies
        -- not yet analyzed (a backlog that arrived in minutes), the planner
        -- took their join for one row and compared every change of the batch
        -- with every instance of the archive: 7 s a batch of 1,000 at 40,000
        -- instances, 73 ms this way (bench/routing --instances 20000).
        INSERT INTO route_deliveries (route_id, change_seq, change_type, level, public_id, actions)
        SELECT rt.id, c.seq, c.change_type, c.level, c.public_id, rt.actions
        FROM changes c
        CROSS JOIN LATERAL (
            SELECT v.resource_id, v.tags FROM tessera_instance_route_tags v
            WHERE v.public_id = c.public_id OFFSET 0) x
        WHERE c.seq > cur AND c.seq <= last AND c.change_type = rt.trigger
          AND tessera_route_tags_match(rt.conditions, x.tags, x.resource_id)
        ORDER BY c.seq
        ON CONFLICT (route_id, change_seq) DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        made := made + n;
        -- series, studies, patients (Stable*): one by one
        FOR ch IN
            SELECT c.seq, c.change_type, c.level, c.public_id, r.id AS res FROM changes c
            CROSS JOIN LATERAL (SELECT r.id FROM resources r
                                WHERE r.public_id = c.public_id AND r.level < 3 OFFSET 0) r
            WHERE c.seq > cur AND c.seq <= last AND c.change_type = rt.trigger
            ORDER BY c.seq
        LOOP
            IF tessera_route_matches(rt.conditions, ch.res) THEN
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
