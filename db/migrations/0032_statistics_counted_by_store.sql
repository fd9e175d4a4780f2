-- Ingest's store function (db/functions/store_instance.sql) adds an instance's
-- counts to the statistics counters itself, in one call, instead of through
-- the two insert triggers of 0025 (resources, attachments): each ran a plpgsql
-- body, a query over its transition table and an UPDATE of a counter row, about
-- a fifth of PostgreSQL's time per stored instance (bench/ingest-cpu
-- --statements). The function marks its transaction while it inserts
-- (tessera.statistics_counted, transaction-local, set back before it returns);
-- the insert triggers leave such statements to it. Deletions, other writers
-- and every other statement still count through the triggers.
--
-- tessera_statistics_add becomes plpgsql: as an SQL-language function its
-- UPDATE was parsed and planned at every call (0.19 ms of PostgreSQL's time per
-- call, eight times the UPDATE's own); plpgsql keeps the plan per session.
CREATE OR REPLACE FUNCTION tessera_statistics_add(p_patients bigint, p_studies bigint, p_series bigint,
                                                  p_instances bigint, p_disk bigint, p_raw bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE statistics_counters
    SET patients = patients + p_patients, studies = studies + p_studies,
        series = series + p_series, instances = instances + p_instances,
        disk_size = disk_size + p_disk, raw_size = raw_size + p_raw
    WHERE slot = (txid_current() % 64)::smallint;
END $$;

CREATE OR REPLACE FUNCTION tessera_statistics_resources_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tessera.statistics_counted', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM tessera_statistics_add(count(*) FILTER (WHERE level = 0), count(*) FILTER (WHERE level = 1),
                                   count(*) FILTER (WHERE level = 2), count(*) FILTER (WHERE level = 3), 0, 0)
    FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tessera_statistics_attachments_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tessera.statistics_counted', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM tessera_statistics_add(0, 0, 0, 0, sum(n.compressed_size)::bigint,
                                   sum(n.uncompressed_size)::bigint)
    FROM new_rows n WHERE EXISTS (SELECT 1 FROM resources WHERE id = n.resource_id)
    HAVING count(*) > 0;
    RETURN NULL;
END $$;
