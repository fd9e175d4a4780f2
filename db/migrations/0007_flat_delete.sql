-- Flat deletion: DELETE /studies/{id} answers in about the same time whatever
-- the study's size. The cascading foreign keys to resources fired one
-- statement per deleted row for each of the 7 tables that referred to it
-- (7,000 single-row statements for a study of 1,000 instances; 410 ms for
-- 10,000, docs/benchmarks.md). Now a deletion removes the resource rows and
-- their per-level rows set-based (all that lookups and matching see) and
-- leaves the metadata and attachment rows of the removed resources to the
-- deleter service, which removes them and queues their files in its own
-- transactions (deletion_purge, db/functions/delete.sql).
--
-- Why no foreign key is needed:
-- - resource ids are never reused (bigserial) and every read reaches metadata
--   and attachments through a live resource, so a row left for the deleter is
--   invisible;
-- - a child never points at a removed parent: the write path either creates
--   each parent in its own transaction or locks it FOR KEY SHARE before adding
--   a child (tessera_upsert_resource), and a deletion locks the resource and
--   its ancestors FOR UPDATE before it reads the subtree in READ COMMITTED
--   (tessera_delete_resource), so it waits for writers that hold a parent and
--   then sees their children.
ALTER TABLE resources DROP CONSTRAINT resources_parent_id_fkey;
ALTER TABLE patients DROP CONSTRAINT patients_resource_id_fkey;
ALTER TABLE studies DROP CONSTRAINT studies_resource_id_fkey;
ALTER TABLE series DROP CONSTRAINT series_resource_id_fkey;
ALTER TABLE instances DROP CONSTRAINT instances_resource_id_fkey;
ALTER TABLE metadata DROP CONSTRAINT metadata_resource_id_fkey;
ALTER TABLE attachments DROP CONSTRAINT attachments_resource_id_fkey;

-- Resources removed from the index whose metadata and attachment rows are
-- still to be removed (and the attachments' files queued). One row per
-- deletion, whatever its size.
CREATE TABLE deletion_purge (
    id            bigserial PRIMARY KEY,
    resource_ids  bigint[] NOT NULL,
    enqueued_at   timestamptz NOT NULL DEFAULT now()
);
