-- A copy of the patient's name in each of its studies, for the queries at
-- study level and below that match PatientName (C-FIND, /tools/find, QIDO).
-- With "Limit 100" the matcher walks studies in id order and stops at the
-- 101st match; with the name in the patients table each step was two more
-- index lookups (resources, patients), and on a 10M-instance index those were
-- 70,000 buffer reads for a 2% prefix: 12 ms, against 1.8 at 100k
-- (docs/benchmarks.md, "Ten million"). With the copy: 766 buffers, 2.6 ms.
--
-- The copy is the patient row's value (a patient's name is written once, when
-- it is created, and never updated), filled by a trigger so that every writer
-- of studies (the store function, the bench loader, tests) keeps it right.
ALTER TABLE studies ADD COLUMN patient_name text, ADD COLUMN patient_name_norm text;

CREATE FUNCTION tessera_study_patient_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.patient_name, p.patient_name_norm INTO NEW.patient_name, NEW.patient_name_norm
    FROM resources r JOIN patients p ON p.resource_id = r.parent_id
    WHERE r.id = NEW.resource_id;
    RETURN NEW;
END $$;

CREATE TRIGGER studies_patient_name BEFORE INSERT ON studies
    FOR EACH ROW EXECUTE FUNCTION tessera_study_patient_name();

UPDATE studies s SET patient_name = p.patient_name, patient_name_norm = p.patient_name_norm
FROM resources r JOIN patients p ON p.resource_id = r.parent_id
WHERE r.id = s.resource_id;

-- C-FIND without a limit on a name prefix reads the matching studies by name
CREATE INDEX studies_patient_name_norm ON studies (patient_name_norm text_pattern_ops);
CREATE INDEX studies_patient_name ON studies (patient_name text_pattern_ops);
