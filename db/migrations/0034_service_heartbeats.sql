-- Each service process's heartbeat (lib/io/heartbeat.h): one row per process,
-- written at start, every TESSERA_HEARTBEAT_INTERVAL seconds, and at a clean
-- stop; listed by GET /tessera/services. A process whose row is older than
-- three of its intervals is down (killed, hung, or cut off from the database);
-- rows of processes gone for a day are removed by the heartbeats of the others.
CREATE TABLE service_heartbeats (
    id          bigserial PRIMARY KEY,
    service     text NOT NULL,
    version     text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    interval_s  integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz,
    healthy     boolean NOT NULL DEFAULT true,
    reason      text NOT NULL DEFAULT ''
);
CREATE INDEX service_heartbeats_last_seen ON service_heartbeats (last_seen);
