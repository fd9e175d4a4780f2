-- PUT /tools/accepted-transfer-syntaxes (Orthanc 1.9+): the transfer syntaxes every
-- ingest replica accepts for storage in association negotiation, read by ingest at
-- each association (lib/domain/accepted_syntaxes.c). At most one row; without it,
-- every syntax ingest can store is accepted (Orthanc's default of all).
CREATE TABLE accepted_transfer_syntaxes (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    uids text[] NOT NULL,
    changed timestamptz NOT NULL DEFAULT now()
);
