-- The cluster-wide stable sweep (0016_stable_resources.sql says why a flag).
-- Marks stable the unstable patients, studies and series whose last new
-- instance is older than p_age seconds, and logs StableSeries/StableStudy/
-- StablePatient for each, in one transaction: FOR UPDATE SKIP LOCKED so that
-- sweepers in several processes never claim the same row (each change is
-- logged once) and a row that a writer holds (FOR KEY SHARE while it adds an
-- instance, FOR UPDATE while it deletes) is left for the next pass.
--
-- last_update is touched at most once a second (tessera_touch_ancestors), so
-- the last instance may be up to a second younger than it: the sweep waits
-- p_age + 1 s, so that no event comes before p_age seconds of quiet, and at
-- most p_age + 1 s + one sweep interval after the last instance.
-- Returns how many changes it logged (at most p_limit).
CREATE OR REPLACE FUNCTION tessera_emit_stable(p_age integer, p_limit integer) RETURNS bigint
LANGUAGE sql AS $$
    WITH due AS (
        SELECT id FROM resources
        WHERE NOT stable AND level < 3
          AND last_update < now() - make_interval(secs => p_age + 1)
        ORDER BY last_update
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED),
    marked AS (
        UPDATE resources r SET stable = true
        FROM due WHERE r.id = due.id
        RETURNING r.id, r.level, r.public_id),
    logged AS (
        -- series before their study before its patient, as Orthanc logs them
        INSERT INTO changes (change_type, level, public_id)
        SELECT CASE level WHEN 2 THEN 'StableSeries' WHEN 1 THEN 'StableStudy'
                          ELSE 'StablePatient' END,
               level, public_id
        FROM (SELECT level, public_id, id FROM marked ORDER BY level DESC, id) m
        RETURNING 1)
    SELECT count(*) FROM logged
$$;
