-- Case-insensitive matching folds every letter, not only ASCII ones. upper()
-- follows the database's collation, and the databases that scripts/run and
-- the tests create use C (initdb --no-locale), where upper('é') is 'é': a
-- C-FIND of 'TeSt-É*' found neither 'TEST-É...' nor 'test-é...'.
-- tessera_fold() upper-cases with ICU's root locale whatever the database's
-- collation: case is folded, accents are kept ('é' -> 'É', never 'E'), as
-- Orthanc 1.10.1 does (its ToUpperCaseWithAccents). The stored *_norm columns,
-- the matcher (services/query/query_match.c) and every index on folded values
-- use this one function, so both sides of a comparison fold the same way.
-- It is IMMUTABLE so that indexes can be built on it: an ICU upgrade that
-- changes case mappings (letters of a newer Unicode) calls for the *_norm
-- columns to be folded again and for REINDEX, as with any ICU collation.
CREATE OR REPLACE FUNCTION tessera_fold(v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT upper(v COLLATE "und-x-icu") $$;

UPDATE patients SET patient_name_norm = tessera_fold(patient_name)
WHERE patient_name_norm IS DISTINCT FROM tessera_fold(patient_name);
UPDATE studies SET referring_physician_norm = tessera_fold(referring_physician)
WHERE referring_physician_norm IS DISTINCT FROM tessera_fold(referring_physician);
