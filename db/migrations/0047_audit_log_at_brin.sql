-- audit_log is appended to in time order (each service's batches carry the
-- times of their events, a fraction of a second old): a BRIN index on "at"
-- serves the deleters' retention (rows older than N days) at a fraction of a
-- B-tree's cost per inserted row, paid by every audited request.
DROP INDEX IF EXISTS audit_log_at;
CREATE INDEX audit_log_at ON audit_log USING brin (at);
