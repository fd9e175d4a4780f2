"""Fills Tessera's index in SQL with a hospital-shaped archive, for the scale
benchmarks (bench/scale). No files: the rows are what ingest's write path
(db/functions/store_instance.sql) would have written for instances whose files
are not there; bench/scale stores a sample of real files through ingest on top,
so that reads of content have something to read.

Shape, for N instances (issue 20's 10M: 100,000 patients, 200,000 studies,
800,000 series):
- N / 100 patients, two studies each, four series per study;
- series of 8 to 16 instances, except one study in 499 whose four series have
  600 instances each (2,400-instance studies, as a CT/MR department has);
- names from syllables, so that many share prefixes (BR*, BRAN*, BRANSON^*);
- study dates spread over 20 years (2005-2024), times over the day;
- 10 modalities with a hospital's weights (CR/DX and CT most, NM and XA few);
- per instance: its attachment (a 520 KB file that is not there), the nine
  metadata rows of a C-STORE (ReceptionDate, Origin, RemoteAET, RemoteIP,
  CalledAET, TransferSyntax, PixelDataOffset, SopClassUid, IndexInSeries) and
  its NewInstance change; NewSeries/NewStudy/NewPatient changes as ingest
  appends them; the change log numbered as the sequencer numbers it.

Each chunk of studies is one transaction, so the load can be watched and a
crash loses one chunk. Resource ids are given explicitly in ranges that real
inserts never reach (the id sequence is moved past them at the end).
"""
import time

# Syllables for family names: 24 x 16 x 12 = 4,608 names sharing prefixes.
S1 = ["AB", "AL", "AN", "BA", "BR", "CA", "CH", "DA", "DE", "EL", "FA", "GA", "HA", "JO",
      "KA", "LA", "MA", "MO", "NO", "PA", "RO", "SA", "TH", "WA"]
S2 = ["BER", "DEN", "KER", "LIN", "MAN", "NES", "RAN", "REN", "SON", "TON", "VER", "WEL",
      "DER", "GAN", "MER", "TEL"]
S3 = ["", "S", "SON", "TON", "LEY", "ER", "EN", "ING", "MAN", "ELL", "OW", "ARD"]
GIVEN = ["JOHN", "MARY", "PETER", "ANNA", "PAUL", "SARAH", "MARK", "LAURA", "JAMES", "EMMA",
         "DAVID", "KATE", "TOM", "LUCY", "ERIC", "NORA", "IVAN", "ELSA", "OMAR", "LENA"]
# 10 modalities, weights out of 100 (by study)
MODALITIES = [("CR", 22), ("CT", 20), ("DX", 14), ("MR", 12), ("US", 12), ("MG", 8),
              ("PT", 4), ("NM", 3), ("XA", 3), ("OT", 2)]
SOP_CLASS = {"CR": "1.2.840.10008.5.1.4.1.1.1", "CT": "1.2.840.10008.5.1.4.1.1.2",
             "DX": "1.2.840.10008.5.1.4.1.1.1.1", "MR": "1.2.840.10008.5.1.4.1.1.4",
             "US": "1.2.840.10008.5.1.4.1.1.6.1", "MG": "1.2.840.10008.5.1.4.1.1.1.2",
             "PT": "1.2.840.10008.5.1.4.1.1.128", "NM": "1.2.840.10008.5.1.4.1.1.20",
             "XA": "1.2.840.10008.5.1.4.1.1.12.1", "OT": "1.2.840.10008.5.1.4.1.1.7",
             "SR": "1.2.840.10008.5.1.4.1.1.88.22"}
DESCRIPTIONS = ["CHEST PA", "CT HEAD W/O CONTRAST", "MRI KNEE LEFT", "ABDOMEN US",
                "MAMMO SCREENING BILATERAL", "CT THORAX ABDOMEN PELVIS", "PET-CT WHOLE BODY",
                "BONE SCAN", "CORONARY ANGIOGRAPHY", "HAND 2 VIEWS", "MRI BRAIN", "SPINE LUMBAR"]
UID_ROOT = "1.2.826.0.1.3680043.8.498.77"

# First resource id of each level: far above what the bigserial would reach
# during a benchmark, and apart so that a level's rows are one id range.
BASE = {"patient": 10**12, "study": 2 * 10**12, "series": 3 * 10**12, "instance": 4 * 10**12}
BIG_STUDY_EVERY, BIG_SERIES_SIZE = 499, 600


def sql_array(values):
    return "ARRAY[" + ",".join("'" + v + "'" for v in values) + "]"


def helpers_sql():
    mod_list = []
    for m, w in MODALITIES:
        mod_list += [m] * w
    sops = " ".join(f"WHEN '{m}' THEN '{u}'" for m, u in SOP_CLASS.items())
    return f"""
-- Orthanc-shaped public ids (5 x 8 hex digits) that no real file has.
CREATE OR REPLACE FUNCTION pg_temp.pid(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT substr(h, 1, 8) || '-' || substr(h, 9, 8) || '-' || substr(h, 17, 8) || '-' ||
           substr(h, 25, 8) || '-' || substr(h, 33, 8)
    FROM (SELECT md5(t) || substr(md5(t || '.'), 1, 8) AS h) x $$;
CREATE OR REPLACE FUNCTION pg_temp.family(p bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT ({sql_array(S1)})[1 + (p * 7) % {len(S1)}] || ({sql_array(S2)})[1 + (p / 3) % {len(S2)}]
           || ({sql_array(S3)})[1 + (p / 11) % {len(S3)}] $$;
CREATE OR REPLACE FUNCTION pg_temp.given(p bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT ({sql_array(GIVEN)})[1 + (p * 13 / 7) % {len(GIVEN)}] $$;
CREATE OR REPLACE FUNCTION pg_temp.modality(s bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT ({sql_array(mod_list)})[1 + (s * 2654435761) % 100] $$;
CREATE OR REPLACE FUNCTION pg_temp.sop_class(m text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE m {sops} END $$;
-- instances in series q (of study q / 4)
CREATE OR REPLACE FUNCTION pg_temp.series_size(q bigint) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN (q / 4) % {BIG_STUDY_EVERY} = 7 THEN {BIG_SERIES_SIZE}
                ELSE 8 + ((q * 7919) % 9)::int END $$;
"""


def chunk_sql(s0, s1):
    """The rows of studies [s0, s1) (s0 and s1 even: two studies per patient)."""
    p0, p1 = s0 // 2, s1 // 2
    q0, q1 = 4 * s0, 4 * s1
    b = BASE
    descs = sql_array(DESCRIPTIONS)
    return f"""
BEGIN;
CREATE TEMP TABLE pat ON COMMIT DROP AS
SELECT {b['patient']} + p AS id, p, pg_temp.pid('p' || p) AS public_id,
       'P' || lpad(p::text, 8, '0') AS patient_id,
       pg_temp.family(p) || '^' || pg_temp.given(p) AS name,
       to_char(date '1930-01-01' + ((p * 7907) % 32000)::int, 'YYYYMMDD') AS birth,
       CASE WHEN p % 2 = 0 THEN 'M' ELSE 'F' END AS sex
FROM generate_series({p0}::bigint, {p1 - 1}) p;
CREATE TEMP TABLE stu ON COMMIT DROP AS
SELECT {b['study']} + s AS id, s, {b['patient']} + s / 2 AS parent, pg_temp.pid('s' || s) AS public_id,
       '{UID_ROOT}.' || s AS uid,
       to_char(date '2005-01-01' + ((s * 104729) % 7300)::int, 'YYYYMMDD') AS date,
       lpad(((s * 31) % 24)::text, 2, '0') || lpad(((s * 17) % 60)::text, 2, '0') || '00' AS time,
       'A' || lpad(s::text, 9, '0') AS accession,
       ({descs})[1 + (s * 5) % {len(DESCRIPTIONS)}] AS description,
       'DR^' || pg_temp.family(s + 17) AS referring,
       pg_temp.modality(s) AS modality
FROM generate_series({s0}::bigint, {s1 - 1}) s;
CREATE TEMP TABLE ser ON COMMIT DROP AS
SELECT {b['series']} + q AS id, q, {b['study']} + q / 4 AS parent, pg_temp.pid('q' || q) AS public_id,
       '{UID_ROOT}.' || (q / 4) || '.' || (q % 4 + 1) AS uid,
       CASE WHEN q % 4 = 3 AND pg_temp.modality(q / 4) IN ('CT', 'PT', 'NM') THEN 'SR'
            ELSE pg_temp.modality(q / 4) END AS modality,
       (q % 4 + 1)::int AS number, pg_temp.series_size(q) AS size
FROM generate_series({q0}::bigint, {q1 - 1}) q;
CREATE TEMP TABLE ins ON COMMIT DROP AS
SELECT {b['instance']} + q * 1000 + i AS id, q, i, {b['series']} + q AS parent,
       pg_temp.pid('i' || q || '.' || i) AS public_id,
       '{UID_ROOT}.' || (q / 4) || '.' || (q % 4 + 1) || '.' || i AS uid,
       pg_temp.sop_class(ser.modality) AS sop_class
FROM ser, generate_series(1, ser.size) i;

INSERT INTO resources (id, level, public_id, parent_id)
SELECT id, 0, public_id, NULL FROM pat;
INSERT INTO patients (resource_id, patient_id, patient_name, patient_name_norm,
                      patient_birth_date, patient_sex, main_tags)
SELECT id, patient_id, name, tessera_fold(name), birth, sex,
       jsonb_build_object('PatientID', patient_id, 'PatientName', name,
                          'PatientBirthDate', birth, 'PatientSex', sex)
FROM pat;
INSERT INTO resources (id, level, public_id, parent_id)
SELECT id, 1, public_id, parent FROM stu;
INSERT INTO studies (resource_id, study_instance_uid, study_date, study_time, accession_number,
                     study_description, referring_physician, referring_physician_norm,
                     modalities_in_study, main_tags, patient_tags)
SELECT stu.id, uid, date, time, accession, description, referring, tessera_fold(referring),
       CASE WHEN modality IN ('CT', 'PT', 'NM') THEN ARRAY[modality, 'SR'] ELSE ARRAY[modality] END,
       jsonb_build_object('StudyInstanceUID', uid, 'StudyDate', date, 'StudyTime', time,
                          'AccessionNumber', accession, 'StudyDescription', description,
                          'ReferringPhysicianName', referring, 'StudyID', s::text),
       jsonb_build_object('PatientID', pat.patient_id, 'PatientName', pat.name,
                          'PatientBirthDate', pat.birth, 'PatientSex', pat.sex)
FROM stu JOIN pat ON pat.id = stu.parent;
INSERT INTO resources (id, level, public_id, parent_id)
SELECT id, 2, public_id, parent FROM ser;
INSERT INTO series (resource_id, series_instance_uid, modality, series_number, series_description,
                    main_tags)
SELECT id, uid, modality, number, modality || ' SERIES ' || number,
       jsonb_build_object('SeriesInstanceUID', uid, 'Modality', modality,
                          'SeriesNumber', number::text,
                          'SeriesDescription', modality || ' SERIES ' || number)
FROM ser;
INSERT INTO resources (id, level, public_id, parent_id)
SELECT id, 3, public_id, parent FROM ins;
INSERT INTO instances (resource_id, sop_instance_uid, sop_class_uid, instance_number,
                       index_in_series, main_tags)
SELECT id, uid, sop_class, i, i,
       jsonb_build_object('SOPInstanceUID', uid, 'InstanceNumber', i::text)
FROM ins;
INSERT INTO attachments (resource_id, content_type, uuid, compressed_size, uncompressed_size, md5)
SELECT id, 1, gen_random_uuid(), 532480 + (i % 64) * 16, 532480 + (i % 64) * 16,
       md5(public_id)
FROM ins;
INSERT INTO metadata (resource_id, name, value)
SELECT ins.id, m.name, m.value
FROM ins, LATERAL (VALUES
    ('ReceptionDate', to_char(timestamp '2005-01-01' + (ins.q % 7300) * interval '1 day',
                              'YYYY-MM-DD"T"HH24:MI:SS')),
    ('Origin', 'DicomProtocol'), ('RemoteAET', 'MODALITY' || (ins.q % 12)),
    ('RemoteIP', '10.0.' || (ins.q % 12) || '.20'), ('CalledAET', 'TESSERA'),
    ('TransferSyntax', '1.2.840.10008.1.2.1'), ('PixelDataOffset', '1486'),
    ('SopClassUid', ins.sop_class), ('IndexInSeries', ins.i::text)) AS m(name, value);

-- The change log as ingest appends it (NewInstance, then NewSeries/NewStudy/NewPatient
-- after a resource's first instance), numbered as tessera_sequence_changes() numbers it.
WITH log AS (
    SELECT 'NewInstance' AS t, 3::smallint AS level, ins.public_id, ins.id * 8 AS ord FROM ins
    UNION ALL SELECT 'NewSeries', 2, ser.public_id, ({b['instance']} + ser.q * 1000 + 1) * 8 + 1 FROM ser
    UNION ALL SELECT 'NewStudy', 1, stu.public_id, ({b['instance']} + stu.s * 4000 + 1) * 8 + 2 FROM stu
    UNION ALL SELECT 'NewPatient', 0, pat.public_id, ({b['instance']} + pat.p * 8000 + 1) * 8 + 3 FROM pat),
numbered AS (
    INSERT INTO changes (change_type, level, public_id, seq)
    SELECT t, level, public_id, (SELECT last_seq FROM change_counter) + row_number() OVER (ORDER BY ord)
    FROM log RETURNING 1)
UPDATE change_counter SET last_seq = last_seq + (SELECT count(*) FROM numbered);
COMMIT;
"""


def shape(n):
    """Studies (even) for about n instances, and the exact numbers of each level."""
    per_study = 4 * (8 + 16) / 2  # 48 on average for ordinary studies
    big = 4 * BIG_SERIES_SIZE
    mean = per_study + (big - per_study) / BIG_STUDY_EVERY
    studies = max(2, int(round(n / mean / 2)) * 2)
    return studies


def exact_counts(studies):
    """(patients, studies, series, instances) that shape(n) produces."""
    instances = 0
    for q in range(4 * studies):
        instances += BIG_SERIES_SIZE if (q // 4) % BIG_STUDY_EVERY == 7 else 8 + (q * 7919) % 9
    return studies // 2, studies, 4 * studies, instances


def load(psql, n, chunk_instances=500_000, log=print):
    """Fills the index through psql(sql) with about n instances; returns the counts."""
    studies = shape(n)
    per_chunk = max(2, int(chunk_instances / 53) // 2 * 2)
    t0 = time.time()
    for s0 in range(0, studies, per_chunk):
        s1 = min(studies, s0 + per_chunk)
        psql(helpers_sql() + chunk_sql(s0, s1))
        done = s1 / studies
        log(f"  load: studies {s1}/{studies} ({done:.0%}) in {time.time() - t0:.0f} s")
    # New resources get ids after the loaded ranges never collide with them.
    psql(f"SELECT setval('resources_id_seq', {BASE['instance'] + 4 * studies * 1000 + 1000});"
         " ANALYZE;")
    return exact_counts(studies)
