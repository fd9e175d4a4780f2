-- The deletion queue as the deleter service drains it (services/deleter):
-- a failed removal is retried later (not_before), with its error kept for the
-- status route; removals are counted per minute for the removal rate.
-- (0003 is taken by the query service's indexes.)
ALTER TABLE deletion_queue ADD COLUMN not_before timestamptz NOT NULL DEFAULT now();
ALTER TABLE deletion_queue ADD COLUMN last_error text;
CREATE INDEX deletion_queue_ready ON deletion_queue (not_before, id);
CREATE INDEX deletion_queue_uuid ON deletion_queue (uuid);

CREATE TABLE deletion_stats (
    minute   timestamptz PRIMARY KEY,  -- date_trunc('minute', time of the removal)
    removed  bigint NOT NULL
);
