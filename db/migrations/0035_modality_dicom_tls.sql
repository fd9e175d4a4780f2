-- Outgoing DICOM TLS (issue 19): a modality with Orthanc's UseDicomTls is now
-- reached over DICOM TLS (lib/dicom/dicom_net.hh), so the flag is stored as
-- given; 0022 refused true with a CHECK.
ALTER TABLE modalities DROP CONSTRAINT IF EXISTS modalities_use_dicom_tls_check;
