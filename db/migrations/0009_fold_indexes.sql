-- /tools/find matches every text tag without case unless it is sent
-- "CaseSensitive": true (Orthanc 1.10.1's default), and /tools/lookup finds
-- a PatientID without case: the typed columns that such lookups name keep an
-- index on their folded value (services/query/query_match.c writes
-- tessera_fold(column), the expression of these indexes). Values without
-- letters (UIDs, dates, numbers) are compared as they are and use the plain
-- indexes; person names have their *_norm columns.
CREATE INDEX IF NOT EXISTS patients_patient_id_fold
    ON patients (tessera_fold(patient_id) text_pattern_ops);
CREATE INDEX IF NOT EXISTS studies_accession_fold
    ON studies (tessera_fold(accession_number) text_pattern_ops);
CREATE INDEX IF NOT EXISTS studies_description_fold
    ON studies (tessera_fold(study_description) text_pattern_ops);
CREATE INDEX IF NOT EXISTS series_description_fold
    ON series (tessera_fold(series_description) text_pattern_ops);
