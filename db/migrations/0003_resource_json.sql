-- Read side of the REST API: one function builds a resource's Orthanc JSON, so
-- that every read route is one SQL round trip. And LastUpdate of patients,
-- studies and series: the write path now touches its ancestors, at most once a
-- second each, so that concurrent writers of one study do not queue on the
-- study's row for every instance.

CREATE OR REPLACE FUNCTION tessera_touch_ancestors(p_series bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE resources SET last_update = now()
    WHERE id IN (
        SELECT se.id FROM resources se WHERE se.id = p_series
        UNION ALL SELECT st.id FROM resources se JOIN resources st ON st.id = se.parent_id
                  WHERE se.id = p_series
        UNION ALL SELECT pa.id FROM resources se JOIN resources st ON st.id = se.parent_id
                  JOIN resources pa ON pa.id = st.parent_id WHERE se.id = p_series)
      AND last_update < now() - interval '1 second'
$$;

CREATE OR REPLACE FUNCTION tessera_orthanc_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(t, 'YYYYMMDD"T"HH24MISS')
$$;

-- Orthanc's answer to GET /{level}/{id} for the resource with internal id p_id;
-- p_stable_age: seconds without a new instance after which a resource is stable.
CREATE OR REPLACE FUNCTION tessera_resource_json(p_id bigint, p_stable_age integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r resources%ROWTYPE;
    children jsonb;
    stable boolean;
BEGIN
    SELECT * INTO r FROM resources WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    stable := r.last_update < now() - make_interval(secs => p_stable_age);
    IF r.level < 3 THEN
        SELECT coalesce(jsonb_agg(c.public_id ORDER BY c.id), '[]') INTO children
        FROM resources c WHERE c.parent_id = r.id;
    END IF;
    IF r.level = 0 THEN
        RETURN jsonb_build_object(
            'ID', r.public_id, 'Type', 'Patient', 'IsStable', stable,
            'LastUpdate', tessera_orthanc_time(r.last_update),
            'MainDicomTags', (SELECT main_tags FROM patients WHERE resource_id = r.id),
            'Studies', children);
    ELSIF r.level = 1 THEN
        RETURN jsonb_build_object(
            'ID', r.public_id, 'Type', 'Study', 'IsStable', stable,
            'LastUpdate', tessera_orthanc_time(r.last_update),
            'MainDicomTags', (SELECT main_tags FROM studies WHERE resource_id = r.id),
            'PatientMainDicomTags', (SELECT main_tags FROM patients WHERE resource_id = r.parent_id),
            'ParentPatient', (SELECT public_id FROM resources WHERE id = r.parent_id),
            'Series', children);
    ELSIF r.level = 2 THEN
        RETURN jsonb_build_object(
            'ID', r.public_id, 'Type', 'Series', 'IsStable', stable,
            'LastUpdate', tessera_orthanc_time(r.last_update),
            'MainDicomTags', (SELECT main_tags FROM series WHERE resource_id = r.id),
            'ParentStudy', (SELECT public_id FROM resources WHERE id = r.parent_id),
            'ExpectedNumberOfInstances', NULL, 'Status', 'Unknown',
            'Instances', children);
    END IF;
    RETURN (SELECT jsonb_build_object(
            'ID', r.public_id, 'Type', 'Instance',
            'MainDicomTags', i.main_tags,
            'ParentSeries', (SELECT public_id FROM resources WHERE id = r.parent_id),
            'IndexInSeries', i.index_in_series,
            'FileSize', a.uncompressed_size,
            'FileUuid', a.uuid::text)
        FROM instances i LEFT JOIN attachments a ON a.resource_id = i.resource_id AND a.content_type = 1
        WHERE i.resource_id = r.id);
END
$$;

-- Same as in 0002, plus tessera_touch_ancestors().
CREATE OR REPLACE FUNCTION tessera_store_instance(p_ids text[], p_tags jsonb, p_instance jsonb,
                                       p_metadata jsonb, p_overwrite boolean,
                                       OUT status text, OUT old_uuid uuid, OUT changes jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    pat record; stu record; ser record; ins record;
    t jsonb;
    existing_uuid uuid;
    idx integer;
    chg jsonb := '[]';
    c record;
BEGIN
    status := 'stored';

    SELECT * INTO pat FROM tessera_upsert_resource(0::smallint, p_ids[1], NULL);
    IF pat.created THEN
        t := p_tags->'patient';
        INSERT INTO patients (resource_id, patient_id, patient_name, patient_name_norm,
                              patient_birth_date, patient_sex, main_tags)
        VALUES (pat.id, coalesce(t->>'PatientID', ''), t->>'PatientName',
                upper(t->>'PatientName'), t->>'PatientBirthDate', t->>'PatientSex', t);
    END IF;

    SELECT * INTO stu FROM tessera_upsert_resource(1::smallint, p_ids[2], pat.id);
    IF stu.created THEN
        t := p_tags->'study';
        INSERT INTO studies (resource_id, study_instance_uid, study_date, study_time,
                             accession_number, study_description, referring_physician,
                             referring_physician_norm, main_tags)
        VALUES (stu.id, t->>'StudyInstanceUID', t->>'StudyDate', t->>'StudyTime',
                t->>'AccessionNumber', t->>'StudyDescription', t->>'ReferringPhysicianName',
                upper(t->>'ReferringPhysicianName'), t);
    END IF;

    SELECT * INTO ser FROM tessera_upsert_resource(2::smallint, p_ids[3], stu.id);
    IF ser.created THEN
        t := p_tags->'series';
        INSERT INTO series (resource_id, series_instance_uid, modality, series_number,
                            series_description, main_tags)
        VALUES (ser.id, t->>'SeriesInstanceUID', t->>'Modality',
                tessera_int(t->>'SeriesNumber'), t->>'SeriesDescription', t);
        IF coalesce(t->>'Modality', '') <> '' THEN
            UPDATE studies SET modalities_in_study = array_append(modalities_in_study, t->>'Modality')
            WHERE resource_id = stu.id AND NOT (t->>'Modality' = ANY (modalities_in_study));
        END IF;
    END IF;

    SELECT * INTO ins FROM tessera_upsert_resource(3::smallint, p_ids[4], ser.id);
    IF NOT ins.created THEN
        SELECT a.uuid INTO existing_uuid FROM attachments a
        WHERE a.resource_id = ins.id AND a.content_type = 1;
        IF existing_uuid = (p_instance->>'uuid')::uuid THEN
            -- a replay of a transaction whose commit we did not hear about
            status := 'stored';
            changes := '[]';
            RETURN;
        END IF;
        IF NOT p_overwrite THEN
            status := 'already_stored';
            changes := '[]';
            RETURN;
        END IF;
        old_uuid := existing_uuid;
        DELETE FROM resources WHERE id = ins.id;
        SELECT * INTO ins FROM tessera_upsert_resource(3::smallint, p_ids[4], ser.id);
        status := 'overwritten';
    END IF;

    SELECT count(*) INTO idx FROM resources WHERE parent_id = ser.id;
    t := p_tags->'instance';
    INSERT INTO instances (resource_id, sop_instance_uid, sop_class_uid, instance_number,
                           index_in_series, main_tags)
    VALUES (ins.id, t->>'SOPInstanceUID', p_instance->>'sop_class_uid',
            tessera_int(t->>'InstanceNumber'), idx, t);

    INSERT INTO attachments (resource_id, content_type, uuid, compressed_size,
                             uncompressed_size, md5)
    VALUES (ins.id, 1, (p_instance->>'uuid')::uuid, (p_instance->>'size')::bigint,
            (p_instance->>'size')::bigint, p_instance->>'md5');

    INSERT INTO metadata (resource_id, name, value)
    SELECT ins.id, m.key, m.value
    FROM jsonb_each_text(p_metadata || jsonb_build_object('IndexInSeries', idx::text)) m
    WHERE m.value IS NOT NULL;

    PERFORM tessera_touch_ancestors(ser.id);

    -- The order Orthanc logs them in.
    FOR c IN
        INSERT INTO changes (change_type, level, public_id)
        SELECT v.change_type, v.level, v.public_id
        FROM (VALUES (1, 'NewInstance', 3::smallint, p_ids[4], true),
                     (2, 'NewSeries', 2::smallint, p_ids[3], ser.created),
                     (3, 'NewStudy', 1::smallint, p_ids[2], stu.created),
                     (4, 'NewPatient', 0::smallint, p_ids[1], pat.created))
             AS v(ord, change_type, level, public_id, wanted)
        WHERE v.wanted
        ORDER BY v.ord
        RETURNING changes.seq, changes.change_type, changes.level, changes.public_id
    LOOP
        chg := chg || jsonb_build_object('seq', c.seq, 'type', c.change_type,
                                         'level', c.level, 'id', c.public_id);
    END LOOP;
    changes := chg;
END
$$;
