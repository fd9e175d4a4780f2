-- A resource's labels also on its resources row (NULL when it has none), kept by
-- a trigger on labels, so that every writer of labels keeps it. What reads it:
-- the study-level label filter of a caller granted labels (query_match.c),
-- a test on the row that a find reads anyway instead of an index probe into
-- labels per answer, and its GIN index (labelled rows only: nothing added to
-- ingest's inserts) when the caller's labels are few in the archive
-- (docs/benchmarks.md, "Labels on the resources row"). labels stays the
-- reference: Orthanc's label routes, Labels in /tools/find, the patient rule.
ALTER TABLE resources ADD COLUMN labels text[];
UPDATE resources r SET labels = l.labels
  FROM (SELECT resource_id, array_agg(label ORDER BY label) AS labels
          FROM labels GROUP BY resource_id) l
 WHERE l.resource_id = r.id;
CREATE INDEX resources_labels ON resources USING gin (labels) WHERE labels IS NOT NULL;

-- Each change from the row's current value (array_remove/array_append on
-- resources.labels as the UPDATE finds it): two transactions labelling one
-- resource at once both count, the second's UPDATE waiting for the first.
CREATE OR REPLACE FUNCTION tessera_labels_to_resource() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE resources SET labels = nullif(array_remove(labels, OLD.label), '{}')
         WHERE id = OLD.resource_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE resources
           SET labels = array_append(array_remove(coalesce(labels, '{}'), NEW.label), NEW.label)
         WHERE id = NEW.resource_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER labels_to_resource AFTER INSERT OR UPDATE OR DELETE ON labels
    FOR EACH ROW EXECUTE FUNCTION tessera_labels_to_resource();
