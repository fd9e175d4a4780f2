-- The index: one row per patient/study/series/instance in `resources`, with the
-- Orthanc public id and the parent; per-level tables with typed, indexed
-- columns for the tags that C-FIND and QIDO-RS match on; every other main tag
-- in jsonb. Text columns hold DICOM values as received (padding removed); dates
-- stay DICOM text (YYYYMMDD) because it sorts and compares as dates do and keeps
-- malformed values instead of refusing the instance.

CREATE TABLE resources (
    id           bigserial PRIMARY KEY,
    level        smallint NOT NULL CHECK (level BETWEEN 0 AND 3), -- 0 patient .. 3 instance
    public_id    text NOT NULL UNIQUE,
    parent_id    bigint REFERENCES resources (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_update  timestamptz NOT NULL DEFAULT now(),
    CHECK ((level = 0) = (parent_id IS NULL))
);
CREATE INDEX resources_parent ON resources (parent_id);
CREATE INDEX resources_level_id ON resources (level, id);

-- Person names are matched case-insensitively by default: *_norm holds the
-- upper-cased value (accents kept) for equality and prefix matching.
CREATE TABLE patients (
    resource_id        bigint PRIMARY KEY REFERENCES resources (id) ON DELETE CASCADE,
    patient_id         text NOT NULL DEFAULT '',
    patient_name       text,
    patient_name_norm  text,
    patient_birth_date text,
    patient_sex        text,
    main_tags          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX patients_patient_id ON patients (patient_id text_pattern_ops);
CREATE INDEX patients_name_norm ON patients (patient_name_norm text_pattern_ops);
CREATE INDEX patients_birth_date ON patients (patient_birth_date);

CREATE TABLE studies (
    resource_id             bigint PRIMARY KEY REFERENCES resources (id) ON DELETE CASCADE,
    study_instance_uid      text NOT NULL,
    study_date              text,
    study_time              text,
    accession_number        text,
    study_description       text,
    referring_physician     text,
    referring_physician_norm text,
    modalities_in_study     text[] NOT NULL DEFAULT '{}',
    main_tags               jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX studies_uid ON studies (study_instance_uid);
CREATE INDEX studies_date ON studies (study_date);
CREATE INDEX studies_accession ON studies (accession_number text_pattern_ops);
CREATE INDEX studies_description ON studies (study_description text_pattern_ops);
CREATE INDEX studies_referring ON studies (referring_physician_norm text_pattern_ops);
CREATE INDEX studies_modalities ON studies USING gin (modalities_in_study);

CREATE TABLE series (
    resource_id          bigint PRIMARY KEY REFERENCES resources (id) ON DELETE CASCADE,
    series_instance_uid  text NOT NULL,
    modality             text,
    series_number        integer,
    series_description   text,
    main_tags            jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX series_uid ON series (series_instance_uid);
CREATE INDEX series_modality ON series (modality);

CREATE TABLE instances (
    resource_id       bigint PRIMARY KEY REFERENCES resources (id) ON DELETE CASCADE,
    sop_instance_uid  text NOT NULL,
    sop_class_uid     text,
    instance_number   integer,
    index_in_series   integer,
    main_tags         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX instances_uid ON instances (sop_instance_uid);
CREATE INDEX instances_sop_class ON instances (sop_class_uid);

-- Metadata (Orthanc's ReceptionDate, RemoteAET, ... and user metadata) and
-- attachments carry a revision: If-Match compares with it, every change bumps it.
-- The first revision is 0, as in Orthanc.
CREATE TABLE metadata (
    resource_id  bigint NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    name         text NOT NULL,
    value        text NOT NULL,
    revision     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (resource_id, name)
);

-- content_type: Orthanc's FileContentType (1 = DICOM, 1024.. user attachments).
CREATE TABLE attachments (
    resource_id        bigint NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    content_type       integer NOT NULL,
    uuid               uuid NOT NULL UNIQUE,
    compressed_size    bigint NOT NULL,
    uncompressed_size  bigint NOT NULL,
    compression        smallint NOT NULL DEFAULT 0,
    md5                text,
    revision           integer NOT NULL DEFAULT 0,
    PRIMARY KEY (resource_id, content_type)
);

-- The durable change log behind GET /changes and the bus's change events.
CREATE TABLE changes (
    seq          bigserial PRIMARY KEY,
    change_type  text NOT NULL,    -- Orthanc's ChangeType name: NewInstance, NewSeries, ...
    level        smallint NOT NULL,
    public_id    text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Files to remove from the storage area. Filled in the same transaction that
-- removes their rows (DELETE routes); drained by the deleter service.
CREATE TABLE deletion_queue (
    id           bigserial PRIMARY KEY,
    uuid         uuid NOT NULL,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0
);

-- DICOM peers shared by the whole cluster (GET/PUT /modalities).
CREATE TABLE modalities (
    name          text PRIMARY KEY,
    aet           text NOT NULL,
    host          text NOT NULL,
    port          integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    manufacturer  text NOT NULL DEFAULT 'Generic',
    allow_echo    boolean NOT NULL DEFAULT true,
    allow_find    boolean NOT NULL DEFAULT true,
    allow_move    boolean NOT NULL DEFAULT true,
    allow_get     boolean NOT NULL DEFAULT true,
    allow_store   boolean NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX modalities_aet ON modalities (aet);
