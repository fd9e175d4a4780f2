-- Auto-routing (issue 23): rules managed over REST (/tessera/routes), a
-- durable cursor on the change log, and the deliveries each matching change
-- made (db/functions/routing.sql, services/jobs/jobs_router.c).

-- A rule: when a change of type `trigger` happens to a resource matching
-- `conditions`, run `actions` in order. `definition` is the JSON as given
-- (validated by REST); the other columns are what the router reads from it.
-- `revision` is bumped by every update (ETag / If-Match).
CREATE TABLE routes (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    trigger     text NOT NULL
                CHECK (trigger IN ('NewInstance', 'StableSeries', 'StableStudy', 'StablePatient')),
    conditions  jsonb NOT NULL DEFAULT '{}',
    actions     jsonb NOT NULL,
    definition  jsonb NOT NULL,
    revision    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routes_trigger ON routes (trigger) WHERE enabled;

-- The last change (Seq) the router has dispatched. One row: the dispatcher
-- that holds it FOR UPDATE is the only one; it moves in the transaction that
-- inserts the deliveries of the changes it passed, so a router killed
-- mid-way leaves both as they were and the next one redoes the batch.
-- Rules apply from their creation on: the cursor starts at the end of the log.
CREATE TABLE router_cursor (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq  bigint NOT NULL
);
INSERT INTO router_cursor (last_seq) SELECT coalesce(max(seq), 0) FROM changes;

-- One row per (rule, change) that matched: the rule's actions (copied at
-- dispatch: an update of the rule does not change work already decided), the
-- step being run, the job that runs it (Redis registry), attempts and the
-- time of the next look (a claim's lease, a retry's back-off). State:
-- pending (to start or retry a step), running (a job is out), dead (gave up
-- after the attempts allowed: listed and resubmitted over REST). A delivery
-- whose last step succeeded is deleted.
CREATE TABLE route_deliveries (
    id           bigserial PRIMARY KEY,
    route_id     text NOT NULL,
    change_seq   bigint NOT NULL,
    change_type  text NOT NULL,
    level        smallint NOT NULL,
    public_id    text NOT NULL,
    actions      jsonb NOT NULL,
    step         integer NOT NULL DEFAULT 0,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    not_before   timestamptz NOT NULL DEFAULT now(),
    job_id       text,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (route_id, change_seq)
);
CREATE INDEX route_deliveries_due ON route_deliveries (not_before) WHERE state <> 'dead';
CREATE INDEX route_deliveries_dead ON route_deliveries (id) WHERE state = 'dead';
