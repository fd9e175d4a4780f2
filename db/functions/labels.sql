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
CREATE OR REPLACE FUNCTION tessera_visible(p_id bigint, p_labels text[], p_patient_of boolean)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cur bigint := p_id;
    lvl smallint;
    parent bigint;
BEGIN
    SELECT level, parent_id INTO lvl, parent FROM resources WHERE id = cur;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- up to the study
    WHILE lvl > 1 LOOP
        cur := parent;
        SELECT level, parent_id INTO lvl, parent FROM resources WHERE id = cur;
    END LOOP;
    IF lvl = 0 THEN
        RETURN tessera_patient_visible(cur, p_labels);
    END IF;
    IF p_patient_of THEN
        RETURN tessera_patient_visible(parent, p_labels);
    END IF;
    RETURN EXISTS (SELECT 1 FROM labels l WHERE l.resource_id = cur AND l.label = ANY (p_labels));
END
$$;
