-- The series-level keys PS3.18 Table 10.6.1-5 requires QIDO-RS to match on
-- that Orthanc's MainDicomTags (main_tags) do not hold: Performed Procedure
-- Step Start Date/Time and the Request Attributes Sequence's Scheduled
-- Procedure Step ID and Requested Procedure ID. Kept in their own columns so
-- that main_tags stays Orthanc's. request_attributes is a JSON array with one
-- object per item of the first instance's (0040,0275), keyed by tag
-- ({"00400009": "SPS1", "00401001": "RP1"}), values as the index keeps text
-- (several joined by '\'); matched item by item (PS3.4 C.2.2.2.6).
ALTER TABLE series
    ADD COLUMN pps_start_date text,
    ADD COLUMN pps_start_time text,
    ADD COLUMN request_attributes jsonb;
CREATE INDEX IF NOT EXISTS series_pps_start_date ON series (pps_start_date)
    WHERE pps_start_date IS NOT NULL;

-- Series stored before: from the DICOM JSON of their first instance (kept since
-- 0011_instance_dicomweb.sql), one index lookup per series.
UPDATE series s
SET pps_start_date = nullif(d->'00400244'->'Value'->>0, ''),
    pps_start_time = nullif(d->'00400245'->'Value'->>0, ''),
    request_attributes = (
        SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                   '00400009', (SELECT string_agg(v, chr(92)) FROM jsonb_array_elements_text(
                                    it->'00400009'->'Value') v),
                   '00401001', (SELECT string_agg(v, chr(92)) FROM jsonb_array_elements_text(
                                    it->'00401001'->'Value') v))))
        FROM jsonb_array_elements(d->'00400275'->'Value') it)
FROM (SELECT s2.resource_id, x.d
      FROM series s2
      CROSS JOIN LATERAL (SELECT i.dicomweb::jsonb AS d
                          FROM resources r JOIN instances i ON i.resource_id = r.id
                          WHERE r.parent_id = s2.resource_id AND i.dicomweb IS NOT NULL
                          ORDER BY r.id LIMIT 1) x) f
WHERE f.resource_id = s.resource_id
  AND (f.d ? '00400244' OR f.d ? '00400245' OR f.d ? '00400275');
