-- The counter behind the PatientName of anonymized patients ("Anonymized<N>",
-- as Orthanc 1.10.1 names them from its AnonymizationSequence global property):
-- one for the cluster, so two REST processes never hand out the same name.
CREATE SEQUENCE anonymization_sequence;
