-- Per calling AE title label grants (lib/domain/dicom_access.h): a modality
-- whose allowed_labels is set sees over C-FIND, C-MOVE and C-GET only the
-- studies carrying one of these labels (with their series, instances and
-- patients, as a label-scoped REST caller does); NULL: every study. Set over
-- PUT /modalities/{id} as "AllowedLabels" (Tessera's addition to Orthanc's
-- fields). allow_store/find/move/get (0001) are now enforced for the AE.
ALTER TABLE modalities ADD COLUMN allowed_labels text[];
