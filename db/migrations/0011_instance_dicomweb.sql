-- DICOMweb metadata (WADO-RS .../metadata) of each instance: its DICOM JSON
-- model (PS3.18 F.2) without the values of bulk data elements, written by
-- ingest in the transaction that indexes the instance, so that the metadata of
-- a series or a study is one indexed read instead of one file parse per
-- instance. BulkDataURIs are kept relative ("/7fe00010", "/00540016/1/00280010"):
-- rest prefixes them with the instance's URL when it answers.
-- NULL for instances stored before this migration: rest then reads the file.
ALTER TABLE instances ADD COLUMN dicomweb jsonb;
