-- Numbers the committed changes that have no Seq yet, in the order they were
-- inserted, after every Seq given so far. One sequencer at a time (a
-- transaction-level advisory lock). A writer's sequencer that does not get it
-- returns at once (the holder, or the next pass, numbers its rows); a reader
-- (wait = true) waits for the holder's pass, a few milliseconds, and then
-- numbers what is left, so that /changes read right after a commit lists it. Because numbering
-- happens after commit, a row numbered later always gets a larger Seq than any
-- row already visible: a client reading /changes?since=N never skips a change.
-- The counter row moves in the same transaction, so there are no holes.
CREATE OR REPLACE FUNCTION tessera_sequence_changes(wait boolean) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    numbered bigint;
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(x'7365717565636572'::bigint); -- "sequecer"
    ELSIF NOT pg_try_advisory_xact_lock(x'7365717565636572'::bigint) THEN
        RETURN 0;
    END IF;
    WITH todo AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM changes
        WHERE seq IS NULL ORDER BY id LIMIT 10000),
    counter AS (SELECT last_seq FROM change_counter),
    done AS (
        UPDATE changes c SET seq = counter.last_seq + todo.n
        FROM todo, counter WHERE c.id = todo.id
        RETURNING c.seq)
    SELECT count(*) INTO numbered FROM done;
    IF numbered > 0 THEN
        UPDATE change_counter SET last_seq = last_seq + numbered;
    END IF;
    RETURN numbered;
END
$$;

-- The form without the argument, as services before the reader's wait call it
-- (a rolling upgrade runs old and new replicas on one database).
CREATE OR REPLACE FUNCTION tessera_sequence_changes() RETURNS bigint
LANGUAGE sql AS $$ SELECT tessera_sequence_changes(false) $$;
