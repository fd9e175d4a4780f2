-- Indexes for the query service's matching forms (services/query/query_match.c)
-- that 0001 does not already give: exact and prefix (LIKE 'abc%') matches use
-- text_pattern_ops indexes, which serve '=' too; date ranges use plain btrees.
-- Series descriptions and study times are matched by viewers; the combined
-- date/time index serves date ranges that also order or bound the time.
CREATE INDEX IF NOT EXISTS series_description ON series (series_description text_pattern_ops);
CREATE INDEX IF NOT EXISTS studies_date_time ON studies (study_date, study_time);
CREATE INDEX IF NOT EXISTS studies_uid_pattern ON studies (study_instance_uid text_pattern_ops);
CREATE INDEX IF NOT EXISTS patients_birth_date_pattern ON patients (patient_birth_date text_pattern_ops);
-- Case-sensitive person name matching (TESSERA_QUERY_CASE_SENSITIVE_PN) goes to the raw column.
CREATE INDEX IF NOT EXISTS patients_name ON patients (patient_name text_pattern_ops);
CREATE INDEX IF NOT EXISTS series_parent_modality ON series (modality, resource_id);
