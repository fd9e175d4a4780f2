-- Orthanc peers shared by the whole cluster (GET/PUT /peers), the targets of
-- OrthancPeerStore jobs. The password is kept as Orthanc keeps it in its
-- configuration (clear text) and never shown by the REST API.
CREATE TABLE peers (
    name        text PRIMARY KEY,
    url         text NOT NULL,
    username    text,
    password    text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
