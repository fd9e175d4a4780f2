-- Orthanc copies the patient's main tags into each study when the study is
-- created, and GET /studies/{id} answers that copy as PatientMainDicomTags: two
-- studies of one PatientID with other names (or an empty PatientSex in one)
-- show each its own. Tessera answered the patient's tags (of the patient's
-- first instance) for every study. NULL: a study stored before this
-- migration, answered with the patient's tags as before.
ALTER TABLE studies ADD COLUMN patient_tags jsonb;

-- Orthanc's protection of a patient against recycling (/patients/{id}/protected).
-- Tessera recycles nothing, but clients set and read the flag.
ALTER TABLE patients ADD COLUMN protected boolean NOT NULL DEFAULT false;
