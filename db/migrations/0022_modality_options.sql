-- The rest of Orthanc's modality fields of PUT /modalities/{id}, which were
-- dropped silently (GET answered Orthanc's defaults whatever had been sent):
-- AllowFindWorklist, AllowNAction, AllowEventReport (AllowStorageCommitment
-- sets both), AllowTranscoding, UseDicomTls. Stored and echoed back as Orthanc
-- 1.10.1 does. Tessera serves no worklist, N-ACTION or N-EVENT-REPORT and does
-- not transcode towards a modality, so the first four change nothing yet;
-- UseDicomTls is refused when true (no DICOM TLS), hence the CHECK.
ALTER TABLE modalities
    ADD COLUMN allow_find_worklist boolean NOT NULL DEFAULT true,
    ADD COLUMN allow_n_action boolean NOT NULL DEFAULT true,
    ADD COLUMN allow_event_report boolean NOT NULL DEFAULT true,
    ADD COLUMN allow_transcoding boolean NOT NULL DEFAULT true,
    ADD COLUMN use_dicom_tls boolean NOT NULL DEFAULT false CHECK (NOT use_dicom_tls);
