-- The index side of ingest's write path in one round trip: upsert patient,
-- study and series (two writers storing the same new study end with one row
-- each), insert the instance with its attachment and metadata, and append the
-- changes. Typed columns are taken from the main tags here, so that C sends
-- each value once and the SQL is the one place that maps tags to columns.

-- DICOM IS values can be malformed; a bad one is kept in main_tags only.
CREATE OR REPLACE FUNCTION tessera_int(v text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN btrim(v) ~ '^[+-]?[0-9]{1,9}$' THEN btrim(v)::integer END
$$;

-- Orthanc's expected number of instances of a series, from one instance's
-- series-level tags (Orthanc 1.10.1's rule, checked against it in
-- test_rest_clients.py): ImagesInAcquisition x NumberOfTemporalPositions when
-- both are present, else CardiacNumberOfImages; NULL unless that is a positive
-- integer (NumberOfSlices and ImagesInAcquisition alone give none).
CREATE OR REPLACE FUNCTION tessera_expected_instances(t jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN t ? 'ImagesInAcquisition' AND t ? 'NumberOfTemporalPositions' THEN
            nullif(greatest(tessera_int(t->>'ImagesInAcquisition')::bigint
                            * tessera_int(t->>'NumberOfTemporalPositions'), 0), 0)
        WHEN t ? 'CardiacNumberOfImages' THEN
            nullif(greatest(tessera_int(t->>'CardiacNumberOfImages'), 0), 0)
    END
$$;

-- Orthanc's series Status against p_expected instances: Unknown without an
-- expected number; Inconsistent when an instance's index is outside
-- 1..expected or taken twice; Complete when every index is there; else
-- Missing. Instances without an index are left out, as Orthanc does.
CREATE OR REPLACE FUNCTION tessera_series_status(p_series bigint, p_expected bigint)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_expected IS NULL THEN 'Unknown'
        WHEN coalesce(bool_or(i.index_in_series < 1 OR i.index_in_series > p_expected), false)
             OR count(i.index_in_series) <> count(DISTINCT i.index_in_series) THEN 'Inconsistent'
        WHEN count(DISTINCT i.index_in_series) = p_expected THEN 'Complete'
        ELSE 'Missing'
    END
    FROM resources c JOIN instances i ON i.resource_id = c.id
    WHERE c.parent_id = p_series
$$;

-- Inserts a resource if its public id is new. Returns (id, created).
-- ON CONFLICT DO NOTHING waits for a concurrent insert of the same id; the
-- SELECT that follows runs with a new snapshot (READ COMMITTED) and sees it.
CREATE OR REPLACE FUNCTION tessera_upsert_resource(p_level smallint, p_public_id text, p_parent bigint,
                                        OUT id bigint, OUT created boolean)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resources (level, public_id, parent_id)
    VALUES (p_level, p_public_id, p_parent)
    ON CONFLICT (public_id) DO NOTHING
    RETURNING resources.id INTO id;
    IF id IS NOT NULL THEN
        created := true;
        RETURN;
    END IF;
    -- FOR KEY SHARE: a concurrent DELETE of this resource waits for us instead of
    -- removing it between here and the insert of its child (a foreign-key error
    -- that would not be replayed).
    SELECT r.id INTO id FROM resources r WHERE r.public_id = p_public_id FOR KEY SHARE;
    IF id IS NULL THEN
        -- the concurrent writer rolled back between our two statements: replay
        RAISE EXCEPTION 'resource % vanished while being stored', p_public_id
            USING ERRCODE = 'serialization_failure';
    END IF;
    created := false;
END
$$;

-- LastUpdate of the series, study and patient of a new instance, touched at most
-- once a second each (and at once when one is stable: it becomes unstable again,
-- 0016_stable_resources.sql) so that concurrent writers of one study do not queue on
-- its row for every instance. plpgsql, not sql: its statement's plan is cached
-- per session (an SQL-language function was parsed and planned on every call:
-- 12.8% of PostgreSQL's time under C-STORE load, in bench/run's profile).
CREATE OR REPLACE FUNCTION tessera_touch_ancestors(p_series bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE resources SET last_update = now(), stable = false
    WHERE id IN (
        SELECT se.id FROM resources se WHERE se.id = p_series
        UNION ALL SELECT st.id FROM resources se JOIN resources st ON st.id = se.parent_id
                  WHERE se.id = p_series
        UNION ALL SELECT pa.id FROM resources se JOIN resources st ON st.id = se.parent_id
                  JOIN resources pa ON pa.id = st.parent_id WHERE se.id = p_series)
      AND (last_update < now() - interval '1 second' OR stable);
END
$$;

-- p_ids: public ids {patient, study, series, instance}
-- p_tags: {"patient": {...}, "study": {...}, "series": {...}, "instance": {...}}
--         Orthanc's MainDicomTags of each level, and "series_query": the series'
--         other query keys (ts_dicom_series_query_tags)
-- p_instance: {"sop_class_uid": ..., "uuid": ..., "size": ..., "md5": ...}
-- p_metadata: {"ReceptionDate": ..., "RemoteAET": ..., ...}
-- p_dicomweb: the DICOM JSON model without bulk data (0011_instance_dicomweb.sql), kept
--             as its text (json, 0012): not parsed into jsonb and printed again
-- Returns status 'stored', 'already_stored' or 'overwritten'; old_uuid is the file of
-- an overwritten instance; changes lists the appended changes for publishing.
DROP FUNCTION IF EXISTS tessera_store_instance(text[], jsonb, jsonb, jsonb, boolean);
CREATE OR REPLACE FUNCTION tessera_store_instance(p_ids text[], p_tags jsonb, p_instance jsonb,
                                       p_metadata jsonb, p_overwrite boolean, p_dicomweb json,
                                       OUT status text, OUT old_uuid uuid, OUT changes jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    pat record; stu record; ser record; ins record;
    chain record;
    t jsonb;
    existing_uuid uuid;
    idx integer;
    chg jsonb := '[]';
    c record;
    expected bigint;
    completed boolean := false;
BEGIN
    status := 'stored';
    -- The file's lock first (lib/domain/store_index.c's key): the caller checks after
    -- this statement that no deleter reclaimed the file meanwhile, and commits
    -- only then; one round trip less than taking the lock on its own.
    PERFORM pg_advisory_xact_lock(29811, hashtext(p_instance->>'uuid'));
    -- the statistics counters: added below in one call, not by the insert
    -- triggers (0032_statistics_counted_by_store.sql); set back before returning
    PERFORM set_config('tessera.statistics_counted', 'on', true);

    -- Most instances go to a series that exists: one statement finds its
    -- chain and locks it (FOR KEY SHARE on the three rows, as
    -- tessera_upsert_resource does, in one statement instead of six). A chain
    -- being deleted is waited for and then not found: the upserts below make
    -- it anew. The rows are locked in the order of the FROM list: patient,
    -- study, series, top-down like the upserts and like a deletion's FOR
    -- UPDATE (delete.sql), so the two cannot deadlock.
    SELECT se.id AS ser_id, st.id AS stu_id, pa.id AS pat_id,
           least(se.last_update, st.last_update, pa.last_update)
               < now() - interval '1 second' OR se.stable OR st.stable OR pa.stable AS stale
    INTO chain
    FROM resources pa
    JOIN resources st ON st.parent_id = pa.id
    JOIN resources se ON se.parent_id = st.id
    WHERE se.public_id = p_ids[3] AND se.level = 2
    FOR KEY SHARE;
    IF FOUND THEN
        SELECT chain.pat_id AS id, false AS created INTO pat;
        SELECT chain.stu_id AS id, false AS created INTO stu;
        SELECT chain.ser_id AS id, false AS created INTO ser;
    ELSE
        SELECT * INTO pat FROM tessera_upsert_resource(0::smallint, p_ids[1], NULL);
        IF pat.created THEN
            t := p_tags->'patient';
            INSERT INTO patients (resource_id, patient_id, patient_name, patient_name_norm,
                                  patient_birth_date, patient_sex, main_tags)
            VALUES (pat.id, coalesce(t->>'PatientID', ''), t->>'PatientName',
                    tessera_fold(t->>'PatientName'), t->>'PatientBirthDate', t->>'PatientSex', t);
        END IF;

        SELECT * INTO stu FROM tessera_upsert_resource(1::smallint, p_ids[2], pat.id);
        IF stu.created THEN
            t := p_tags->'study';
            INSERT INTO studies (resource_id, study_instance_uid, study_date, study_time,
                                 accession_number, study_description, referring_physician,
                                 referring_physician_norm, main_tags,
                                 patient_tags)
            VALUES (stu.id, t->>'StudyInstanceUID', t->>'StudyDate', t->>'StudyTime',
                    t->>'AccessionNumber', t->>'StudyDescription', t->>'ReferringPhysicianName',
                    tessera_fold(t->>'ReferringPhysicianName'), t,
                    p_tags->'patient');
        END IF;

        SELECT * INTO ser FROM tessera_upsert_resource(2::smallint, p_ids[3], stu.id);
        IF ser.created THEN
            t := p_tags->'series';
            -- p_tags->'series_query': the series' query keys that are no main
            -- tags (0038_series_request_attributes.sql)
            INSERT INTO series (resource_id, series_instance_uid, modality, series_number,
                                series_description, main_tags, pps_start_date,
                                pps_start_time, request_attributes)
            VALUES (ser.id, t->>'SeriesInstanceUID', t->>'Modality',
                    tessera_int(t->>'SeriesNumber'), t->>'SeriesDescription', t,
                    p_tags->'series_query'->>'PerformedProcedureStepStartDate',
                    p_tags->'series_query'->>'PerformedProcedureStepStartTime',
                    p_tags->'series_query'->'RequestAttributesSequence');
            INSERT INTO metadata (resource_id, name, value)
            SELECT ser.id, 'ExpectedNumberOfInstances', e::text
            FROM tessera_expected_instances(t) e WHERE e IS NOT NULL;
            -- Orthanc 1.10.1 also gives the series the RemoteAET of the
            -- instance that created it (and keeps it)
            INSERT INTO metadata (resource_id, name, value)
            SELECT ser.id, 'RemoteAET', p_metadata->>'RemoteAET' WHERE p_metadata ? 'RemoteAET';
            IF coalesce(t->>'Modality', '') <> '' THEN
                UPDATE studies SET modalities_in_study = array_append(modalities_in_study, t->>'Modality')
                WHERE resource_id = stu.id AND NOT (t->>'Modality' = ANY (modalities_in_study));
            END IF;
        END IF;
    END IF;

    SELECT * INTO ins FROM tessera_upsert_resource(3::smallint, p_ids[4], ser.id);
    IF NOT ins.created THEN
        SELECT a.uuid INTO existing_uuid FROM attachments a
        WHERE a.resource_id = ins.id AND a.content_type = 1;
        IF existing_uuid = (p_instance->>'uuid')::uuid OR NOT p_overwrite THEN
            -- the same file: a replay of a transaction whose commit we did not
            -- hear about; another: Orthanc keeps the first copy
            status := CASE WHEN existing_uuid = (p_instance->>'uuid')::uuid
                           THEN 'stored' ELSE 'already_stored' END;
            changes := '[]';
            -- what the upserts created above (a chain found absent, then made)
            PERFORM tessera_statistics_add(pat.created::int, stu.created::int,
                                           ser.created::int, 0, 0, 0);
            PERFORM set_config('tessera.statistics_counted', 'off', true);
            RETURN;
        END IF;
        old_uuid := existing_uuid;
        -- the old row goes; its file (and any other attachment) goes to the
        -- deleter (tessera_purge_removed)
        IF tessera_remove_subtree(ins.id) = 0 THEN
            -- another writer overwrote it first: replay against its row
            RAISE EXCEPTION 'instance % overwritten concurrently', p_ids[4]
                USING ERRCODE = 'serialization_failure';
        END IF;
        SELECT * INTO ins FROM tessera_upsert_resource(3::smallint, p_ids[4], ser.id);
        IF NOT ins.created THEN
            RAISE EXCEPTION 'instance % stored concurrently', p_ids[4]
                USING ERRCODE = 'serialization_failure';
        END IF;
        status := 'overwritten';
    END IF;

    -- Orthanc's IndexInSeries is the InstanceNumber (else ImageIndex), not a count
    t := p_tags->'instance';
    idx := coalesce(tessera_int(t->>'InstanceNumber'), tessera_int(t->>'ImageIndex'));
    INSERT INTO instances (resource_id, sop_instance_uid, sop_class_uid, instance_number,
                           index_in_series, main_tags, dicomweb)
    VALUES (ins.id, t->>'SOPInstanceUID', p_instance->>'sop_class_uid',
            tessera_int(t->>'InstanceNumber'), idx, t, p_dicomweb);

    INSERT INTO attachments (resource_id, content_type, uuid, compressed_size,
                             uncompressed_size, md5)
    VALUES (ins.id, 1, (p_instance->>'uuid')::uuid, (p_instance->>'size')::bigint,
            (p_instance->>'size')::bigint, p_instance->>'md5');

    INSERT INTO metadata (resource_id, name, value)
    SELECT ins.id, m.key, m.value
    FROM jsonb_each_text(p_metadata || CASE
                         WHEN t ? 'InstanceNumber' OR t ? 'ImageIndex' THEN
                             -- the tag's text as Orthanc 1.10.1 keeps it, also empty
                             jsonb_build_object('IndexInSeries',
                                 coalesce(t->>'InstanceNumber', t->>'ImageIndex'))
                         ELSE '{}'::jsonb END) m
    WHERE m.value IS NOT NULL;

    PERFORM tessera_statistics_add(pat.created::int, stu.created::int, ser.created::int, 1,
                                   (p_instance->>'size')::bigint, (p_instance->>'size')::bigint);
    PERFORM set_config('tessera.statistics_counted', 'off', true);

    -- (at most once a second: skipped when the chain was found fresh)
    IF chain.stale IS NOT FALSE THEN
        PERFORM tessera_touch_ancestors(ser.id);
    END IF;

    -- As Orthanc: CompletedSeries when this instance's own tags give an
    -- expected number and the series is complete with it. Only then is the
    -- series counted: a count on every instance made each store cost the size
    -- of its series (O(n^2) for a series of n instances).
    expected := tessera_expected_instances(p_tags->'series');
    IF expected IS NOT NULL THEN
        completed := tessera_series_status(ser.id, expected) = 'Complete';
    END IF;

    -- The order Orthanc logs them in. Seq is given after commit by
    -- tessera_sequence_changes() (changes.sql).
    FOR c IN
        INSERT INTO changes (change_type, level, public_id)
        SELECT v.change_type, v.level, v.public_id
        FROM (VALUES (1, 'NewInstance', 3::smallint, p_ids[4], true),
                     (2, 'NewSeries', 2::smallint, p_ids[3], ser.created),
                     (3, 'NewStudy', 1::smallint, p_ids[2], stu.created),
                     (4, 'NewPatient', 0::smallint, p_ids[1], pat.created),
                     (5, 'CompletedSeries', 2::smallint, p_ids[3], completed))
             AS v(ord, change_type, level, public_id, wanted)
        WHERE v.wanted
        ORDER BY v.ord
        RETURNING changes.change_type, changes.level, changes.public_id
    LOOP
        chg := chg || jsonb_build_object('type', c.change_type,
                                         'level', c.level, 'id', c.public_id);
    END LOOP;
    changes := chg;
END
$$;
