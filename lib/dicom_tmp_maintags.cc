// TEMPORARY stand-in (weak) until dicom_json.cc, with the main tags checked against
// Orthanc, lands; then this file goes.
#include "dicom_internal.hh"
static const char *const P[] = {"PatientName","PatientID","PatientBirthDate","PatientSex","OtherPatientIDs",nullptr};
static const char *const S[] = {"StudyDate","StudyTime","StudyID","StudyDescription","AccessionNumber","StudyInstanceUID","RequestedProcedureDescription","InstitutionName","RequestingPhysician","ReferringPhysicianName",nullptr};
static const char *const E[] = {"SeriesDate","SeriesTime","Modality","Manufacturer","StationName","SeriesDescription","BodyPartExamined","SequenceName","ProtocolName","SeriesNumber","SeriesInstanceUID",nullptr};
static const char *const I[] = {"InstanceCreationDate","InstanceCreationTime","AcquisitionNumber","InstanceNumber","NumberOfFrames","SOPInstanceUID","ImagePositionPatient","ImageOrientationPatient",nullptr};
extern "C" __attribute__((weak)) json_t *ts_dicom_main_tags(const ts_dicom *d, ts_level level)
{
    const char *const *names = level == TS_LEVEL_PATIENT ? P : level == TS_LEVEL_STUDY ? S : level == TS_LEVEL_SERIES ? E : I;
    json_t *o = json_object();
    DcmDataset *ds = const_cast<DcmFileFormat &>(d->file).getDataset();
    for (int i = 0; names[i]; i++) {
        DcmTagKey key; const DcmDataDictionary &dict = dcmDataDict.rdlock();
        const DcmDictEntry *e = dict.findEntry(names[i]); if (e) key = e->getKey(); dcmDataDict.rdunlock();
        if (!e) continue;
        OFString v; if (ds->findAndGetOFStringArray(key, v).good()) json_object_set_new(o, names[i], json_string(v.c_str()));
    }
    return o;
}
