-- Label-scoped visibility (services/rest/rest_auth.c, docs/design.md "Labels
-- and access"). Decided by the study: a study carrying one of the caller's
-- labels is visible with its series and instances. A patient is visible when
-- every one of its studies is, since its JSON lists them all: a patient shared
-- by two groups is seen by neither at the patient level (each still finds its
-- own studies), and no id of another group's study is disclosed.
CREATE OR REPLACE FUNCTION tessera_patient_visible(p_patient bigint, p_labels text[])
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM resources s WHERE s.parent_id = p_patient)
       AND NOT EXISTS (
           SELECT 1 FROM resources s WHERE s.parent_id = p_patient
           AND NOT EXISTS (SELECT 1 FROM labels l
                           WHERE l.resource_id = s.id AND l.label = ANY (p_labels)))
$$;

-- Whether resource p_id is visible to a caller granted p_labels; with
-- p_patient_of, whether its patient is (the routes that answer the patient).
-- Used per row by the label-scoped lists; rest's single-resource checks write
-- the same test into their own statement (REST_VISIBLE_SQL, rest_auth.h).
-- The study and the patient come from one statement (the resource, its parent
-- and grandparent), not a walk of one statement per level; the study's labels
-- from its resources row (0048).
CREATE OR REPLACE FUNCTION tessera_visible(p_id bigint, p_labels text[], p_patient_of boolean)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    lvl smallint;
    study_labels text[];
    patient bigint;
BEGIN
    SELECT r.level,
           CASE r.level WHEN 1 THEN r.labels WHEN 2 THEN p.labels WHEN 3 THEN g.labels END,
           CASE r.level WHEN 0 THEN r.id WHEN 1 THEN r.parent_id WHEN 2 THEN p.parent_id
                        ELSE g.parent_id END
      INTO lvl, study_labels, patient
      FROM resources r
      LEFT JOIN resources p ON r.level >= 2 AND p.id = r.parent_id
      LEFT JOIN resources g ON r.level = 3 AND g.id = p.parent_id
     WHERE r.id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF lvl = 0 OR p_patient_of THEN
        RETURN tessera_patient_visible(patient, p_labels);
    END IF;
    RETURN coalesce(study_labels && p_labels, false);
END
$$;
