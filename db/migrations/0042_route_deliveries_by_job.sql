-- The router (services/jobs/jobs_router.c) claims pending deliveries only, and
-- checks running ones job by job: one Redis look per job, then one statement
-- for all the deliveries a job carried (a routed backlog's job carries 256),
-- found by job_id. Running rows are not rewritten while their job runs, so
-- the claim's index holds pending rows only (the old one also held the
-- running rows, which a claim would now step over).
DROP INDEX route_deliveries_due;
CREATE INDEX route_deliveries_pending ON route_deliveries (not_before) WHERE state = 'pending';
CREATE INDEX route_deliveries_job ON route_deliveries (job_id) WHERE state = 'running';
