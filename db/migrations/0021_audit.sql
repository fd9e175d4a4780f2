-- The audit trail of rest (services/rest/rest_audit.c): one row per request
-- that read, exported, changed or deleted patient data, or was refused, written
-- in batches by a thread of its own so that no request waits for it. Rows older
-- than TESSERA_AUDIT_RETENTION_DAYS are removed by the same thread.
CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL,
    who      text NOT NULL,  -- Basic user, key:<id>, jwt:<subject>; '' without authentication
    source   text NOT NULL,  -- the client's IP address
    action   text NOT NULL CHECK (action IN ('read', 'export', 'modify', 'delete', 'refused')),
    method   text NOT NULL,
    uri      text NOT NULL,
    resource text,           -- the public id or study UID the route names, if any
    status   integer NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_resource ON audit_log (resource, id) WHERE resource IS NOT NULL;
