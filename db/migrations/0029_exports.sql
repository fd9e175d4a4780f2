-- Orthanc's log of exported resources (GET/DELETE /exports), written when
-- TESSERA_LOG_EXPORTED_RESOURCES is on (Orthanc's LogExportedResources) by
-- REST's store requests to a modality or peer and by the router's store
-- steps (lib/domain/exports.c). The identifiers are copied: the log outlives
-- the resources.
CREATE TABLE exports (
    seq          bigserial PRIMARY KEY,
    level        smallint NOT NULL,
    public_id    text NOT NULL,
    remote       text NOT NULL,   -- the modality's or peer's name (Orthanc's RemoteModality)
    patient_id   text,
    study_uid    text,
    series_uid   text,
    sop_uid      text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
