// Shared by the dicom_*.cc files only: the layout of a parsed dataset.
#ifndef TS_DICOM_INTERNAL_HH
#define TS_DICOM_INTERNAL_HH

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <string>

#include "dicom/dicom.h"

// A memfd (close-on-exec) holding a copy of data, read from offset 0 through
// "/proc/self/fd/N"; < 0 (a TS_E* code) on failure.
int ts_memfd_from(const void *data, size_t len, ts_err *err);

// Changes ds (read in `from`; EXS_Unknown: its original syntax) to the
// representation of to_uid in place, with the rules and errors of
// ts_dicom_transcode_file (transcode.cc). ds can then be written in to_uid.
int ts_transcode_dataset(DcmDataset *ds, E_TransferSyntax from, const char *to_uid, unsigned flags,
                         ts_err *err);

struct ts_dicom {
    DcmFileFormat file;          // meta header + dataset
    std::string transfer_syntax; // UID from the meta header, "" if none
    // the syntax ts_dicom_save_file writes: EXS_Unknown for the one it was read
    // in, else what ts_dicom_transcode converted the pixel data to
    E_TransferSyntax write_xfer = EXS_Unknown;
};

// A tag's name as Orthanc writes it: dcmtk's dictionary, except a few main tags
// that Orthanc names itself; DcmTag_ERROR_TagName when unknown (dicom_json.cc).
std::string ts_orthanc_tag_name(const DcmTag &tag);

// Converts the text values of ds (SH, LO, ST, LT, UT, UC, PN, in sequences too)
// from its Specific Character Set to UTF-8, ISO 2022 code extensions included,
// and sets ISO_IR 192. false when a character set is unknown: values are kept.
bool ts_dataset_to_utf8(DcmDataset *ds);

// dcmtk stores strings in the dataset's character set; ts_dicom_open_* converts
// the dataset to UTF-8 once so that every reader sees UTF-8.

#endif
