-- instances.dicomweb as json (its text kept as written) instead of jsonb: WADO-RS
-- metadata sends it as text, and jsonb's output function rebuilds the text of
-- every value on each read. A 1,000-instance series (2.3 MB of DICOM JSON) took
-- about 40 ms of PostgreSQL's time as jsonb and a fifth of that as json. Nothing
-- looks inside it through an index; QIDO's includefield picks keys with ->.
-- Ingest's jsonb value is stored through the assignment cast (jsonb's text: keys
-- in order, one blank after ',' and ':').
ALTER TABLE instances ALTER COLUMN dicomweb TYPE json USING dicomweb::json;
