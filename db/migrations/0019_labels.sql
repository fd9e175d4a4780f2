-- Labels, as Orthanc 1.12 has them (Orthanc 1.10.1 has none): short names
-- ([A-Za-z0-9_-], 1 to 64 characters, checked by rest before they get here)
-- attached to any resource. /tools/find filters on them and the authorization
-- of rest grants reading by label (docs/design.md, "Labels and access").
--
-- No foreign key, as for metadata and attachments (0007_flat_delete.sql): a
-- deletion removes the resource rows, and the deleter removes their label rows
-- with their metadata (tessera_purge_deleted, db/functions/delete.sql); every
-- read reaches labels through a live resource.
CREATE TABLE labels (
    resource_id bigint NOT NULL,
    label       text NOT NULL CHECK (label ~ '^[A-Za-z0-9_-]{1,64}$'),
    PRIMARY KEY (resource_id, label)
);
-- Filtering by a label starts here (label first): the same kind of btree
-- lookup as a typed tag column, then the join on the resource's primary key.
CREATE INDEX labels_label ON labels (label, resource_id);
