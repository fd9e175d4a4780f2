-- Read side of the REST API: one function builds a resource's Orthanc JSON, so
-- that every read route is one SQL round trip.

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
    labels jsonb;
    stable boolean;
    expected bigint;
BEGIN
    SELECT * INTO r FROM resources WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- Orthanc 1.12's "Labels", sorted as its std::set gives them (bytewise)
    SELECT coalesce(jsonb_agg(l.label ORDER BY l.label COLLATE "C"), '[]') INTO labels
    FROM labels l WHERE l.resource_id = r.id;
    -- the flag the stable sweep sets when it logs the Stable* change
    -- (stable.sql), so that IsStable and /changes agree; p_stable_age is
    -- kept for the callers' signature
    stable := r.stable;
    IF r.level < 3 THEN
        SELECT coalesce(jsonb_agg(c.public_id ORDER BY c.id), '[]') INTO children
        FROM resources c WHERE c.parent_id = r.id;
    END IF;
    IF r.level = 0 THEN
        RETURN jsonb_build_object(
            'ID', r.public_id, 'Type', 'Patient', 'IsStable', stable,
            'LastUpdate', tessera_orthanc_time(r.last_update),
            'MainDicomTags', (SELECT main_tags FROM patients WHERE resource_id = r.id),
            'Studies', children, 'Labels', labels);
    ELSIF r.level = 1 THEN
        RETURN jsonb_build_object(
            'ID', r.public_id, 'Type', 'Study', 'IsStable', stable,
            'LastUpdate', tessera_orthanc_time(r.last_update),
            'MainDicomTags', (SELECT main_tags FROM studies WHERE resource_id = r.id),
            'PatientMainDicomTags', coalesce(
                (SELECT patient_tags FROM studies WHERE resource_id = r.id),
                (SELECT main_tags FROM patients WHERE resource_id = r.parent_id)),
            'ParentPatient', (SELECT public_id FROM resources WHERE id = r.parent_id),
            'Series', children, 'Labels', labels);
    ELSIF r.level = 2 THEN
        expected := (SELECT tessera_int(value) FROM metadata
                     WHERE resource_id = r.id AND name = 'ExpectedNumberOfInstances');
        RETURN jsonb_build_object(
            'ID', r.public_id, 'Type', 'Series', 'IsStable', stable,
            'LastUpdate', tessera_orthanc_time(r.last_update),
            'MainDicomTags', (SELECT main_tags FROM series WHERE resource_id = r.id),
            'ParentStudy', (SELECT public_id FROM resources WHERE id = r.parent_id),
            'ExpectedNumberOfInstances', expected,
            'Status', tessera_series_status(r.id, expected),
            'Instances', children, 'Labels', labels);
    END IF;
    RETURN (SELECT jsonb_build_object(
            'ID', r.public_id, 'Type', 'Instance',
            'MainDicomTags', i.main_tags,
            'ParentSeries', (SELECT public_id FROM resources WHERE id = r.parent_id),
            'IndexInSeries', i.index_in_series,
            'FileSize', a.uncompressed_size,
            'FileUuid', a.uuid::text, 'Labels', labels)
        FROM instances i LEFT JOIN attachments a ON a.resource_id = i.resource_id AND a.content_type = 1
        WHERE i.resource_id = r.id);
END
$$;
