-- Cluster-wide stable events (StableSeries, StableStudy, StablePatient). A
-- resource is unstable from its creation or its last new instance until a
-- sweep (tessera_emit_stable, db/functions/stable.sql, run by every jobs
-- process) finds its last_update older than the stable age, marks it stable
-- and logs the change, once: the sweep claims due rows FOR UPDATE SKIP
-- LOCKED, so two sweepers never take the same row, and the flag flips in the
-- transaction that inserts the change. A new instance (tessera_touch_ancestors)
-- makes its series, study and patient unstable again.
--
-- Rows that exist already are taken as stable (ADD COLUMN's default, stored
-- without rewriting the table): they are at least as old as this migration's
-- deployment and nobody waits for their event. New rows start unstable.
ALTER TABLE resources ADD COLUMN stable boolean NOT NULL DEFAULT true;
ALTER TABLE resources ALTER COLUMN stable SET DEFAULT false;
-- the sweep's scan: only the unstable patients, studies and series, oldest first
CREATE INDEX resources_unstable ON resources (last_update) WHERE NOT stable AND level < 3;
