-- /changes in commit order without holes. A bigserial Seq is taken when a
-- writer inserts its change, not when it commits: two writers can commit out
-- of Seq order (a client polling with ?since skips the slower one) and a
-- rolled-back writer leaves a hole. Now writers insert changes unnumbered
-- (seq NULL); tessera_sequence_changes() (db/functions/changes.sql), called
-- after each commit and before each read of /changes, numbers the committed
-- unnumbered rows in order from a counter row.
ALTER TABLE changes DROP CONSTRAINT changes_pkey;
ALTER TABLE changes RENAME COLUMN seq TO id;
ALTER TABLE changes ADD PRIMARY KEY (id);
ALTER TABLE changes ADD COLUMN seq bigint UNIQUE;
UPDATE changes SET seq = id;
CREATE INDEX changes_unsequenced ON changes (id) WHERE seq IS NULL;

CREATE TABLE change_counter (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq  bigint NOT NULL
);
INSERT INTO change_counter (last_seq) SELECT coalesce(max(seq), 0) FROM changes;
