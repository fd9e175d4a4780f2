-- A modality's own LocalAet and Timeout, Orthanc's fields of PUT
-- /modalities/{id}: PUT kept neither and GET .../configuration answered
-- "LocalAet": "" and "Timeout": 0 whatever it had been given. '' and 0 mean
-- none (TESSERA_DICOM_AET, TESSERA_DICOM_TIMEOUT). As in Orthanc 1.10.1, a
-- modality's LocalAet is the calling AE title of every association with it,
-- whatever a request says; its Timeout serves when a request gives none.
ALTER TABLE modalities
    ADD COLUMN local_aet text NOT NULL DEFAULT '',
    ADD COLUMN timeout integer NOT NULL DEFAULT 0 CHECK (timeout BETWEEN 0 AND 3600);
