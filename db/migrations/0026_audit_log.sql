-- The audit trail (lib/domain/audit.h): one row per access to patient data over
-- REST/DICOMweb (and DICOM associations), written in batches by each service's
-- audit thread, read by admins at /tessera/audit, pruned by the deleter after
-- TESSERA_AUDIT_RETENTION_DAYS.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL,
    service    text NOT NULL,
    who        text NOT NULL,
    who_kind   text NOT NULL,
    action     text NOT NULL,
    resources  text[] NOT NULL DEFAULT '{}',
    source     text NOT NULL DEFAULT '',
    request    text NOT NULL DEFAULT '',
    outcome    integer NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_who ON audit_log (who, at);
-- "who touched this study": resources holds public ids and UIDs
CREATE INDEX audit_log_resources ON audit_log USING gin (resources);
