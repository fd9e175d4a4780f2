// Orthanc-style modification and anonymization (see dicom_modify.h).
#include "dicom/dicom_modify.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <dcmtk/dcmdata/dcspchrs.h>

#include "dicom_internal.hh"

namespace
{

struct ts_anon_rule {
    uint32_t tag;
    char action; // 'Z' empty, 'X' remove, 'U' new UID
};

/* PS3.15 Table E.1-1, the Basic Application Level Confidentiality Profile, as
 * Orthanc 1.10.1 applies it for each DicomVersion: per tag its action (Z: emptied,
 * X: removed, U: a new UID, mapped consistently). PatientID and PatientName are
 * replaced (ts_modify_set_anonymous_patient); the curve and overlay groups of
 * 2017c and 2021b are in anon_range_removed(). Sorted by tag. */
/* 2021b (the default) */
const ts_anon_rule ANON_2021B[] = {
    {0x00001000, 'X'}, {0x00001001, 'U'}, {0x00020003, 'U'}, {0x00041511, 'U'}, {0x00080014, 'U'},
    {0x00080015, 'X'}, {0x00080018, 'U'}, {0x00080020, 'Z'}, {0x00080021, 'X'}, {0x00080022, 'X'},
    {0x00080023, 'Z'}, {0x00080024, 'X'}, {0x00080025, 'X'}, {0x0008002a, 'X'}, {0x00080030, 'Z'},
    {0x00080031, 'X'}, {0x00080032, 'X'}, {0x00080033, 'Z'}, {0x00080034, 'X'}, {0x00080035, 'X'},
    {0x00080050, 'Z'}, {0x00080058, 'U'}, {0x00080080, 'X'}, {0x00080081, 'X'}, {0x00080082, 'X'},
    {0x00080090, 'Z'}, {0x00080092, 'X'}, {0x00080094, 'X'}, {0x00080096, 'X'}, {0x0008009c, 'Z'},
    {0x0008009d, 'X'}, {0x00080201, 'X'}, {0x00081010, 'X'}, {0x00081030, 'X'}, {0x0008103e, 'X'},
    {0x00081040, 'X'}, {0x00081041, 'X'}, {0x00081048, 'X'}, {0x00081049, 'X'}, {0x00081050, 'X'},
    {0x00081052, 'X'}, {0x00081060, 'X'}, {0x00081062, 'X'}, {0x00081070, 'X'}, {0x00081072, 'X'},
    {0x00081080, 'X'}, {0x00081084, 'X'}, {0x00081110, 'X'}, {0x00081111, 'X'}, {0x00081120, 'X'},
    {0x00081155, 'U'}, {0x00081195, 'U'}, {0x00082111, 'X'}, {0x00083010, 'U'}, {0x00084000, 'X'},
    {0x00100021, 'X'}, {0x00100030, 'Z'}, {0x00100032, 'X'}, {0x00100040, 'Z'}, {0x00100050, 'X'},
    {0x00100101, 'X'}, {0x00100102, 'X'}, {0x00101000, 'X'}, {0x00101001, 'X'}, {0x00101002, 'X'},
    {0x00101005, 'X'}, {0x00101010, 'X'}, {0x00101020, 'X'}, {0x00101030, 'X'}, {0x00101040, 'X'},
    {0x00101050, 'X'}, {0x00101060, 'X'}, {0x00101080, 'X'}, {0x00101081, 'X'}, {0x00101090, 'X'},
    {0x00101100, 'X'}, {0x00102000, 'X'}, {0x00102110, 'X'}, {0x00102150, 'X'}, {0x00102152, 'X'},
    {0x00102154, 'X'}, {0x00102155, 'X'}, {0x00102160, 'X'}, {0x00102180, 'X'}, {0x001021a0, 'X'},
    {0x001021b0, 'X'}, {0x001021c0, 'X'}, {0x001021d0, 'X'}, {0x001021f0, 'X'}, {0x00102203, 'X'},
    {0x00102297, 'X'}, {0x00102299, 'X'}, {0x00104000, 'X'}, {0x00120010, 'Z'}, {0x00120020, 'Z'},
    {0x00120021, 'Z'}, {0x00120030, 'Z'}, {0x00120031, 'Z'}, {0x00120040, 'Z'}, {0x00120042, 'Z'},
    {0x00120050, 'Z'}, {0x00120051, 'X'}, {0x00120060, 'Z'}, {0x00120071, 'X'}, {0x00120072, 'X'},
    {0x00120081, 'Z'}, {0x00120082, 'X'}, {0x0016002b, 'X'}, {0x0016004b, 'X'}, {0x0016004d, 'X'},
    {0x0016004e, 'X'}, {0x0016004f, 'X'}, {0x00160050, 'X'}, {0x00160051, 'X'}, {0x00160070, 'X'},
    {0x00160071, 'X'}, {0x00160072, 'X'}, {0x00160073, 'X'}, {0x00160074, 'X'}, {0x00160075, 'X'},
    {0x00160076, 'X'}, {0x00160077, 'X'}, {0x00160078, 'X'}, {0x00160079, 'X'}, {0x0016007a, 'X'},
    {0x0016007b, 'X'}, {0x0016007c, 'X'}, {0x0016007d, 'X'}, {0x0016007e, 'X'}, {0x0016007f, 'X'},
    {0x00160080, 'X'}, {0x00160081, 'X'}, {0x00160082, 'X'}, {0x00160083, 'X'}, {0x00160084, 'X'},
    {0x00160085, 'X'}, {0x00160086, 'X'}, {0x00160087, 'X'}, {0x00160088, 'X'}, {0x00160089, 'X'},
    {0x0016008a, 'X'}, {0x0016008b, 'X'}, {0x0016008c, 'X'}, {0x0016008d, 'X'}, {0x0016008e, 'X'},
    {0x00180010, 'Z'}, {0x00181000, 'X'}, {0x00181002, 'U'}, {0x00181004, 'X'}, {0x00181005, 'X'},
    {0x00181007, 'X'}, {0x00181008, 'X'}, {0x00181009, 'X'}, {0x0018100a, 'X'}, {0x0018100b, 'U'},
    {0x00181030, 'X'}, {0x001811bb, 'Z'}, {0x00181400, 'X'}, {0x00182042, 'U'}, {0x00184000, 'X'},
    {0x00185011, 'X'}, {0x0018700a, 'X'}, {0x00189185, 'X'}, {0x00189367, 'Z'}, {0x00189369, 'Z'},
    {0x0018936a, 'Z'}, {0x00189371, 'Z'}, {0x00189373, 'X'}, {0x0018937b, 'X'}, {0x0018937f, 'X'},
    {0x00189424, 'X'}, {0x00189516, 'X'}, {0x00189517, 'X'}, {0x00189937, 'X'}, {0x0018a003, 'X'},
    {0x0020000d, 'U'}, {0x0020000e, 'U'}, {0x00200010, 'Z'}, {0x00200052, 'U'}, {0x00200200, 'U'},
    {0x00203401, 'X'}, {0x00203406, 'X'}, {0x00204000, 'X'}, {0x00209158, 'X'}, {0x00209161, 'U'},
    {0x00209164, 'U'}, {0x00281199, 'U'}, {0x00281214, 'U'}, {0x00284000, 'X'}, {0x00320012, 'X'},
    {0x00321020, 'X'}, {0x00321021, 'X'}, {0x00321030, 'X'}, {0x00321032, 'X'}, {0x00321033, 'X'},
    {0x00321060, 'X'}, {0x00321066, 'X'}, {0x00321067, 'X'}, {0x00321070, 'X'}, {0x00324000, 'X'},
    {0x00340001, 'Z'}, {0x00340002, 'Z'}, {0x00340005, 'Z'}, {0x00340007, 'Z'}, {0x00380004, 'X'},
    {0x00380010, 'X'}, {0x00380011, 'X'}, {0x00380014, 'X'}, {0x0038001e, 'X'}, {0x00380020, 'X'},
    {0x00380021, 'X'}, {0x00380040, 'X'}, {0x00380050, 'X'}, {0x00380060, 'X'}, {0x00380061, 'X'},
    {0x00380062, 'X'}, {0x00380064, 'X'}, {0x00380300, 'X'}, {0x00380400, 'X'}, {0x00380500, 'X'},
    {0x00384000, 'X'}, {0x003a0310, 'U'}, {0x003a0314, 'Z'}, {0x00400001, 'X'}, {0x00400002, 'X'},
    {0x00400003, 'X'}, {0x00400004, 'X'}, {0x00400005, 'X'}, {0x00400006, 'X'}, {0x00400007, 'X'},
    {0x00400009, 'X'}, {0x0040000b, 'X'}, {0x00400010, 'X'}, {0x00400011, 'X'}, {0x00400012, 'X'},
    {0x00400241, 'X'}, {0x00400242, 'X'}, {0x00400243, 'X'}, {0x00400244, 'X'}, {0x00400245, 'X'},
    {0x00400250, 'X'}, {0x00400251, 'X'}, {0x00400253, 'X'}, {0x00400254, 'X'}, {0x00400275, 'X'},
    {0x00400280, 'X'}, {0x00400310, 'X'}, {0x0040050a, 'X'}, {0x00400512, 'Z'}, {0x00400513, 'Z'},
    {0x0040051a, 'X'}, {0x00400551, 'Z'}, {0x00400554, 'U'}, {0x00400555, 'X'}, {0x00400562, 'Z'},
    {0x00400600, 'X'}, {0x00400602, 'X'}, {0x00400610, 'Z'}, {0x004006fa, 'X'}, {0x00401001, 'X'},
    {0x00401002, 'X'}, {0x00401004, 'X'}, {0x00401005, 'X'}, {0x0040100a, 'X'}, {0x00401010, 'X'},
    {0x00401011, 'X'}, {0x00401101, 'Z'}, {0x00401102, 'X'}, {0x00401103, 'X'}, {0x00401104, 'X'},
    {0x00401400, 'X'}, {0x00402001, 'X'}, {0x00402008, 'X'}, {0x00402009, 'X'}, {0x00402010, 'X'},
    {0x00402011, 'X'}, {0x00402016, 'Z'}, {0x00402017, 'Z'}, {0x00402400, 'X'}, {0x00403001, 'X'},
    {0x00404005, 'X'}, {0x00404008, 'X'}, {0x00404010, 'X'}, {0x00404011, 'X'}, {0x00404023, 'U'},
    {0x00404025, 'X'}, {0x00404027, 'X'}, {0x00404028, 'X'}, {0x00404030, 'X'}, {0x00404034, 'X'},
    {0x00404035, 'X'}, {0x00404036, 'X'}, {0x00404037, 'X'}, {0x00404050, 'X'}, {0x00404051, 'X'},
    {0x00404052, 'X'}, {0x0040a027, 'Z'}, {0x0040a073, 'Z'}, {0x0040a075, 'Z'}, {0x0040a078, 'X'},
    {0x0040a07a, 'X'}, {0x0040a07c, 'X'}, {0x0040a088, 'Z'}, {0x0040a123, 'Z'}, {0x0040a124, 'U'},
    {0x0040a171, 'U'}, {0x0040a172, 'U'}, {0x0040a192, 'X'}, {0x0040a193, 'X'}, {0x0040a307, 'X'},
    {0x0040a352, 'X'}, {0x0040a353, 'X'}, {0x0040a354, 'X'}, {0x0040a358, 'X'}, {0x0040a402, 'U'},
    {0x0040a730, 'Z'}, {0x0040db0c, 'U'}, {0x0040db0d, 'U'}, {0x0050001b, 'X'}, {0x00500020, 'X'},
    {0x00500021, 'X'}, {0x00620021, 'U'}, {0x00700001, 'Z'}, {0x00700084, 'Z'}, {0x00700086, 'X'},
    {0x0070031a, 'U'}, {0x00701101, 'U'}, {0x00701102, 'U'}, {0x00880140, 'U'}, {0x00880200, 'X'},
    {0x00880904, 'X'}, {0x00880906, 'X'}, {0x00880910, 'X'}, {0x00880912, 'X'}, {0x04000100, 'U'},
    {0x04000402, 'X'}, {0x04000403, 'X'}, {0x04000404, 'X'}, {0x04000550, 'X'}, {0x04000551, 'X'},
    {0x04000552, 'X'}, {0x04000561, 'X'}, {0x04000600, 'X'}, {0x20300020, 'X'}, {0x22000002, 'X'},
    {0x22000005, 'X'}, {0x30060002, 'Z'}, {0x30060004, 'X'}, {0x30060006, 'X'}, {0x30060008, 'Z'},
    {0x30060009, 'Z'}, {0x30060024, 'U'}, {0x30060026, 'Z'}, {0x30060028, 'X'}, {0x30060038, 'X'},
    {0x30060085, 'X'}, {0x30060088, 'X'}, {0x300600a6, 'Z'}, {0x300600c2, 'U'}, {0x30080054, 'X'},
    {0x30080056, 'X'}, {0x30080105, 'X'}, {0x30080250, 'X'}, {0x30080251, 'X'}, {0x300a0002, 'Z'},
    {0x300a0003, 'X'}, {0x300a0004, 'X'}, {0x300a0006, 'X'}, {0x300a0007, 'X'}, {0x300a000e, 'X'},
    {0x300a0013, 'U'}, {0x300a0016, 'X'}, {0x300a0072, 'X'}, {0x300a0083, 'U'}, {0x300a00b2, 'X'},
    {0x300a00c3, 'X'}, {0x300a00dd, 'X'}, {0x300a0196, 'X'}, {0x300a01a6, 'X'}, {0x300a01b2, 'X'},
    {0x300a0216, 'X'}, {0x300a02eb, 'X'}, {0x300a0608, 'Z'}, {0x300a0609, 'U'}, {0x300a0611, 'Z'},
    {0x300a0615, 'Z'}, {0x300a0619, 'Z'}, {0x300a0623, 'Z'}, {0x300a062a, 'Z'}, {0x300a0650, 'U'},
    {0x300a0676, 'X'}, {0x300a067c, 'Z'}, {0x300a067d, 'Z'}, {0x300a0700, 'U'}, {0x300a0734, 'Z'},
    {0x300a0736, 'Z'}, {0x300a073a, 'Z'}, {0x300a0741, 'Z'}, {0x300a0742, 'Z'}, {0x300a0760, 'Z'},
    {0x300a0783, 'Z'}, {0x300c0113, 'X'}, {0x300e0008, 'X'}, {0x30100006, 'U'}, {0x3010000b, 'U'},
    {0x3010000f, 'Z'}, {0x30100013, 'U'}, {0x30100015, 'U'}, {0x30100017, 'Z'}, {0x3010001b, 'Z'},
    {0x3010002d, 'Z'}, {0x30100031, 'U'}, {0x30100033, 'Z'}, {0x30100034, 'Z'}, {0x30100035, 'Z'},
    {0x30100036, 'X'}, {0x30100037, 'X'}, {0x30100038, 'Z'}, {0x3010003b, 'U'}, {0x30100043, 'Z'},
    {0x3010004c, 'X'}, {0x3010004d, 'X'}, {0x30100054, 'Z'}, {0x30100056, 'X'}, {0x3010005a, 'Z'},
    {0x3010005c, 'Z'}, {0x30100061, 'X'}, {0x3010006e, 'U'}, {0x3010006f, 'U'}, {0x30100077, 'Z'},
    {0x3010007a, 'Z'}, {0x3010007b, 'Z'}, {0x3010007f, 'Z'}, {0x30100081, 'Z'}, {0x40000010, 'X'},
    {0x40004000, 'X'}, {0x40080042, 'X'}, {0x40080102, 'X'}, {0x4008010a, 'X'}, {0x4008010b, 'X'},
    {0x4008010c, 'X'}, {0x40080111, 'X'}, {0x40080114, 'X'}, {0x40080115, 'X'}, {0x40080118, 'X'},
    {0x40080119, 'X'}, {0x4008011a, 'X'}, {0x40080202, 'X'}, {0x40080300, 'X'}, {0x40084000, 'X'},
    {0xfffafffa, 'X'}, {0xfffcfffc, 'X'},
};
/* 2017c */
const ts_anon_rule ANON_2017C[] = {
    {0x00001000, 'X'}, {0x00001001, 'U'}, {0x00020003, 'U'}, {0x00041511, 'U'}, {0x00080014, 'U'},
    {0x00080015, 'X'}, {0x00080018, 'U'}, {0x00080020, 'Z'}, {0x00080021, 'X'}, {0x00080022, 'X'},
    {0x00080023, 'Z'}, {0x00080024, 'X'}, {0x00080025, 'X'}, {0x0008002a, 'X'}, {0x00080030, 'Z'},
    {0x00080031, 'X'}, {0x00080032, 'X'}, {0x00080033, 'Z'}, {0x00080034, 'X'}, {0x00080035, 'X'},
    {0x00080050, 'Z'}, {0x00080058, 'U'}, {0x00080080, 'X'}, {0x00080081, 'X'}, {0x00080082, 'X'},
    {0x00080090, 'Z'}, {0x00080092, 'X'}, {0x00080094, 'X'}, {0x00080096, 'X'}, {0x0008009c, 'Z'},
    {0x0008009d, 'X'}, {0x00080201, 'X'}, {0x00081010, 'X'}, {0x00081030, 'X'}, {0x0008103e, 'X'},
    {0x00081040, 'X'}, {0x00081048, 'X'}, {0x00081049, 'X'}, {0x00081050, 'X'}, {0x00081052, 'X'},
    {0x00081060, 'X'}, {0x00081062, 'X'}, {0x00081070, 'X'}, {0x00081072, 'X'}, {0x00081080, 'X'},
    {0x00081084, 'X'}, {0x00081110, 'X'}, {0x00081111, 'X'}, {0x00081120, 'X'}, {0x00081155, 'U'},
    {0x00081195, 'U'}, {0x00082111, 'X'}, {0x00083010, 'U'}, {0x00084000, 'X'}, {0x00100021, 'X'},
    {0x00100030, 'Z'}, {0x00100032, 'X'}, {0x00100040, 'Z'}, {0x00100050, 'X'}, {0x00100101, 'X'},
    {0x00100102, 'X'}, {0x00101000, 'X'}, {0x00101001, 'X'}, {0x00101002, 'X'}, {0x00101005, 'X'},
    {0x00101010, 'X'}, {0x00101020, 'X'}, {0x00101030, 'X'}, {0x00101040, 'X'}, {0x00101050, 'X'},
    {0x00101060, 'X'}, {0x00101080, 'X'}, {0x00101081, 'X'}, {0x00101090, 'X'}, {0x00101100, 'X'},
    {0x00102000, 'X'}, {0x00102110, 'X'}, {0x00102150, 'X'}, {0x00102152, 'X'}, {0x00102154, 'X'},
    {0x00102155, 'X'}, {0x00102160, 'X'}, {0x00102180, 'X'}, {0x001021a0, 'X'}, {0x001021b0, 'X'},
    {0x001021c0, 'X'}, {0x001021d0, 'X'}, {0x001021f0, 'X'}, {0x00102203, 'X'}, {0x00102297, 'X'},
    {0x00102299, 'X'}, {0x00104000, 'X'}, {0x00180010, 'Z'}, {0x00181000, 'X'}, {0x00181002, 'U'},
    {0x00181004, 'X'}, {0x00181005, 'X'}, {0x00181007, 'X'}, {0x00181008, 'X'}, {0x00181030, 'X'},
    {0x00181400, 'X'}, {0x00182042, 'U'}, {0x00184000, 'X'}, {0x0018700a, 'X'}, {0x00189424, 'X'},
    {0x00189516, 'X'}, {0x00189517, 'X'}, {0x0018a003, 'X'}, {0x0020000d, 'U'}, {0x0020000e, 'U'},
    {0x00200010, 'Z'}, {0x00200052, 'U'}, {0x00200200, 'U'}, {0x00203401, 'X'}, {0x00203404, 'X'},
    {0x00203406, 'X'}, {0x00204000, 'X'}, {0x00209158, 'X'}, {0x00209161, 'U'}, {0x00209164, 'U'},
    {0x00281199, 'U'}, {0x00281214, 'U'}, {0x00284000, 'X'}, {0x00320012, 'X'}, {0x00321020, 'X'},
    {0x00321021, 'X'}, {0x00321030, 'X'}, {0x00321032, 'X'}, {0x00321033, 'X'}, {0x00321060, 'X'},
    {0x00321070, 'X'}, {0x00324000, 'X'}, {0x00380004, 'X'}, {0x00380010, 'X'}, {0x00380011, 'X'},
    {0x0038001e, 'X'}, {0x00380020, 'X'}, {0x00380021, 'X'}, {0x00380040, 'X'}, {0x00380050, 'X'},
    {0x00380060, 'X'}, {0x00380061, 'X'}, {0x00380062, 'X'}, {0x00380300, 'X'}, {0x00380400, 'X'},
    {0x00380500, 'X'}, {0x00384000, 'X'}, {0x00400001, 'X'}, {0x00400002, 'X'}, {0x00400003, 'X'},
    {0x00400004, 'X'}, {0x00400005, 'X'}, {0x00400006, 'X'}, {0x00400007, 'X'}, {0x0040000b, 'X'},
    {0x00400010, 'X'}, {0x00400011, 'X'}, {0x00400012, 'X'}, {0x00400241, 'X'}, {0x00400242, 'X'},
    {0x00400243, 'X'}, {0x00400244, 'X'}, {0x00400245, 'X'}, {0x00400250, 'X'}, {0x00400251, 'X'},
    {0x00400253, 'X'}, {0x00400254, 'X'}, {0x00400275, 'X'}, {0x00400280, 'X'}, {0x00400555, 'X'},
    {0x00401001, 'X'}, {0x00401004, 'X'}, {0x00401005, 'X'}, {0x00401010, 'X'}, {0x00401011, 'X'},
    {0x00401101, 'Z'}, {0x00401102, 'X'}, {0x00401103, 'X'}, {0x00401104, 'X'}, {0x00401400, 'X'},
    {0x00402001, 'X'}, {0x00402008, 'X'}, {0x00402009, 'X'}, {0x00402010, 'X'}, {0x00402011, 'X'},
    {0x00402016, 'Z'}, {0x00402017, 'Z'}, {0x00402400, 'X'}, {0x00403001, 'X'}, {0x00404005, 'X'},
    {0x00404010, 'X'}, {0x00404011, 'X'}, {0x00404023, 'U'}, {0x00404025, 'X'}, {0x00404027, 'X'},
    {0x00404028, 'X'}, {0x00404030, 'X'}, {0x00404034, 'X'}, {0x00404035, 'X'}, {0x00404036, 'X'},
    {0x00404037, 'X'}, {0x00404050, 'X'}, {0x00404051, 'X'}, {0x00404052, 'X'}, {0x0040a027, 'X'},
    {0x0040a073, 'Z'}, {0x0040a075, 'Z'}, {0x0040a078, 'X'}, {0x0040a07a, 'X'}, {0x0040a07c, 'X'},
    {0x0040a088, 'Z'}, {0x0040a123, 'Z'}, {0x0040a124, 'U'}, {0x0040a171, 'U'}, {0x0040a172, 'U'},
    {0x0040a192, 'X'}, {0x0040a193, 'X'}, {0x0040a307, 'X'}, {0x0040a352, 'X'}, {0x0040a353, 'X'},
    {0x0040a354, 'X'}, {0x0040a358, 'X'}, {0x0040a402, 'U'}, {0x0040a730, 'X'}, {0x0040db0c, 'U'},
    {0x0040db0d, 'U'}, {0x00620021, 'U'}, {0x00700001, 'Z'}, {0x00700084, 'Z'}, {0x00700086, 'X'},
    {0x0070031a, 'U'}, {0x00701101, 'U'}, {0x00701102, 'U'}, {0x00880140, 'U'}, {0x00880200, 'X'},
    {0x00880904, 'X'}, {0x00880906, 'X'}, {0x00880910, 'X'}, {0x00880912, 'X'}, {0x04000100, 'X'},
    {0x04000402, 'X'}, {0x04000403, 'X'}, {0x04000404, 'X'}, {0x04000550, 'X'}, {0x04000561, 'X'},
    {0x20300020, 'X'}, {0x30060024, 'U'}, {0x300600c2, 'U'}, {0x30080105, 'X'}, {0x300a0013, 'U'},
    {0x300c0113, 'X'}, {0x300e0008, 'X'}, {0x40000010, 'X'}, {0x40004000, 'X'}, {0x40080042, 'X'},
    {0x40080102, 'X'}, {0x4008010a, 'X'}, {0x4008010b, 'X'}, {0x4008010c, 'X'}, {0x40080111, 'X'},
    {0x40080114, 'X'}, {0x40080115, 'X'}, {0x40080118, 'X'}, {0x40080119, 'X'}, {0x4008011a, 'X'},
    {0x40080202, 'X'}, {0x40080300, 'X'}, {0x40084000, 'X'}, {0xfffafffa, 'X'}, {0xfffcfffc, 'X'},
};
/* 2008: the table of that edition plus what Orthanc added from experience */
const ts_anon_rule ANON_2008[] = {
    {0x00080014, 'U'}, {0x00080018, 'U'}, {0x00080050, 'X'}, {0x00080080, 'X'}, {0x00080081, 'X'},
    {0x00080090, 'X'}, {0x00080092, 'X'}, {0x00080094, 'X'}, {0x00081010, 'X'}, {0x00081030, 'X'},
    {0x0008103e, 'X'}, {0x00081040, 'X'}, {0x00081048, 'X'}, {0x00081050, 'X'}, {0x00081060, 'X'},
    {0x00081070, 'X'}, {0x00081080, 'X'}, {0x00081155, 'U'}, {0x00082111, 'X'}, {0x00100030, 'X'},
    {0x00100032, 'X'}, {0x00100040, 'X'}, {0x00101000, 'X'}, {0x00101001, 'X'}, {0x00101010, 'X'},
    {0x00101020, 'X'}, {0x00101030, 'X'}, {0x00101040, 'X'}, {0x00101090, 'X'}, {0x00102000, 'X'},
    {0x00102154, 'X'}, {0x00102160, 'X'}, {0x00102180, 'X'}, {0x001021b0, 'X'}, {0x00104000, 'X'},
    {0x00181000, 'X'}, {0x00181030, 'X'}, {0x0020000d, 'U'}, {0x0020000e, 'U'}, {0x00200010, 'X'},
    {0x00200052, 'U'}, {0x00200200, 'U'}, {0x00204000, 'X'}, {0x00321032, 'X'}, {0x00400275, 'X'},
    {0x0040a124, 'U'}, {0x0040a730, 'X'}, {0x00880140, 'U'}, {0x30060024, 'U'}, {0x300600c2, 'U'},
};

const uint32_t TAG_DEIDENTIFICATION_METHOD = TS_TAG(0x0012, 0x0063);
const uint32_t TAG_PATIENT_IDENTITY_REMOVED = TS_TAG(0x0012, 0x0062);

bool is_private(uint32_t tag)
{
    return ((tag >> 16) & 1) != 0;
}

bool is_database_key(uint32_t tag)
{
    return tag == TS_TAG_PATIENT_ID || tag == TS_TAG_STUDY_INSTANCE_UID ||
           tag == TS_TAG_SERIES_INSTANCE_UID || tag == TS_TAG_SOP_INSTANCE_UID;
}

DcmTagKey key_of(uint32_t tag)
{
    return DcmTagKey(static_cast<Uint16>(tag >> 16), static_cast<Uint16>(tag & 0xffff));
}

std::string strip(const std::string &s)
{
    size_t b = s.find_first_not_of(" \0", 0, 2),
           e = s.find_last_not_of(" \0", std::string::npos, 2);
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// "gggg,eeee" as Orthanc formats a tag in its messages
std::string tag_text(uint32_t tag)
{
    char buf[16];
    snprintf(buf, sizeof(buf), "%04x,%04x", tag >> 16, tag & 0xffff);
    return buf;
}

} // namespace

struct ts_modify {
    bool anonymize = false;
    int level = 3;
    bool remove_private = false;
    std::string private_creator;
    std::string version; // anonymization profile
    std::set<uint32_t> removals, clearings, uids, private_keep;
    std::map<uint32_t, json_t *> replacements;
    bool keep_study = false, keep_series = false, keep_sop = false;
    std::string secret;
    std::map<uint32_t, DcmElement *> copies; // NULL: remove (merge)
    // Orthanc's paths into sequences ("Seq[0].Other[*].Tag"): removed or
    // replaced inside the items they name
    struct path_op {
        std::vector<std::pair<uint32_t, long>> parents; // sequence and item (-1: every item)
        uint32_t tag;
        json_t *value; // NULL: remove
    };
    std::vector<path_op> paths;
    std::vector<path_op> keep_paths; // Keep: left alone inside sequences (value unused)
    ~ts_modify()
    {
        for (auto &r : replacements)
            json_decref(r.second);
        for (auto &p : paths)
            json_decref(p.value);
        for (auto &c : copies)
            delete c.second;
    }
    void remove(uint32_t t)
    {
        removals.insert(t);
        clearings.erase(t);
        uids.erase(t);
        erase_replacement(t);
        private_keep.erase(t);
    }
    void erase_replacement(uint32_t t)
    {
        auto it = replacements.find(t);
        if (it != replacements.end()) {
            json_decref(it->second);
            replacements.erase(it);
        }
    }
    void replace(uint32_t t, json_t *v)
    {
        removals.erase(t);
        clearings.erase(t);
        uids.erase(t);
        erase_replacement(t);
        replacements[t] = json_incref(v);
        if (is_private(t))
            private_keep.insert(t);
    }
    void keep(uint32_t t)
    {
        removals.erase(t);
        clearings.erase(t);
        uids.erase(t);
        erase_replacement(t);
        if (is_private(t))
            private_keep.insert(t);
        if (t == TS_TAG_STUDY_INSTANCE_UID)
            keep_study = true;
        else if (t == TS_TAG_SERIES_INSTANCE_UID)
            keep_series = true;
        else if (t == TS_TAG_SOP_INSTANCE_UID)
            keep_sop = true;
    }
    bool replaced(uint32_t t) const
    {
        return replacements.count(t) != 0;
    }
};

namespace
{

int fail(ts_oe *oe, ts_oe code, ts_err *err, const char *details)
{
    *oe = code;
    return ts_err_set(err, TS_EINVAL, "%s", details);
}

/* A top-level tag named in Remove, Keep or Replace that the index keys on (a
 * UID, PatientID...) needs Force, with Orthanc 1.10.1's message. */
int check_force(const char *name, uint32_t tag, const char *what, bool force, ts_oe *oe,
                ts_err *err)
{
    if (force || !is_database_key(tag))
        return 0;
    char details[256];
    snprintf(details, sizeof(details),
             "Marking tag \"%s\" as to be %s requires the \"Force\" option to be set to true", name,
             what);
    return fail(oe, TS_OE_BAD_REQUEST, err, details);
}

bool setup_anonymization(ts_modify *m, const std::string &version)
{
    const ts_anon_rule *rules;
    size_t n;
    if (version == "2021b") {
        rules = ANON_2021B;
        n = sizeof(ANON_2021B) / sizeof(ANON_2021B[0]);
    } else if (version == "2017c") {
        rules = ANON_2017C;
        n = sizeof(ANON_2017C) / sizeof(ANON_2017C[0]);
    } else if (version == "2008") {
        rules = ANON_2008;
        n = sizeof(ANON_2008) / sizeof(ANON_2008[0]);
    } else {
        return false;
    }
    m->anonymize = true;
    m->version = version;
    m->level = 0;
    m->remove_private = true;
    for (size_t i = 0; i < n; i++) {
        if (rules[i].action == 'Z')
            m->clearings.insert(rules[i].tag);
        else if (rules[i].action == 'X')
            m->removals.insert(rules[i].tag);
        else
            m->uids.insert(rules[i].tag);
    }
    std::string method = version == "2008"
                             ? "Tessera - PS 3.15-2008 Table E.1-1"
                             : "Tessera - PS 3.15-" + version + " Table E.1-1 Basic Profile";
    json_t *v = json_string(method.c_str());
    m->replace(TAG_DEIDENTIFICATION_METHOD, v);
    json_decref(v);
    v = json_string("YES");
    m->replace(TAG_PATIENT_IDENTITY_REMOVED, v);
    json_decref(v);
    return true;
}

bool get_bool(const json_t *body, const char *name, bool def, bool *out)
{
    const json_t *v = json_object_get(body, name);
    if (!v) {
        *out = def;
        return true;
    }
    if (!json_is_boolean(v))
        return false;
    *out = json_is_true(v);
    return true;
}

std::string strip_spaces(const std::string &s)
{
    size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// One tag of a path: a name, "gggg,eeee", "ggggeeee", or "(gggg,eeee)" (hex only
// inside parentheses, as Orthanc's DicomPath, which says which token failed then).
int path_tag(const std::string &token, uint32_t *tag, ts_oe *oe, ts_err *err)
{
    if (token.size() >= 2 && token.front() == '(' && token.back() == ')') {
        std::string hex = token.substr(1, token.size() - 2);
        if (hex.empty() || !isxdigit(static_cast<unsigned char>(hex[0])) ||
            !ts_dicom_parse_tag(hex.c_str(), tag))
            return fail(oe, TS_OE_UNKNOWN_DICOM_TAG, err, ("Cannot parse tag: " + token).c_str());
        return 0;
    }
    return ts_dicom_parse_tag(token.c_str(), tag) ? 0 : fail(oe, TS_OE_UNKNOWN_DICOM_TAG, err, "");
}

/* Orthanc's DicomPath ("Seq[0].Other[*].Tag", "(0008,1140)[*].(0008,1155)", or one
 * tag: no parents), with its errors: the final tag is read first, an unknown tag
 * is UnknownDicomTag, a malformed parent ParameterOutOfRange with its words. */
int parse_path(const char *text, ts_modify::path_op &op, ts_oe *oe, ts_err *err)
{
    std::vector<std::string> tokens;
    std::string s(text);
    for (size_t b = 0;;) {
        size_t dot = s.find('.', b);
        tokens.push_back(s.substr(b, dot == std::string::npos ? std::string::npos : dot - b));
        if (dot == std::string::npos)
            break;
        b = dot + 1;
    }
    op.parents.clear();
    int rc = path_tag(strip_spaces(tokens.back()), &op.tag, oe, err);
    if (rc)
        return rc;
    for (size_t i = 0; i + 1 < tokens.size(); i++) {
        size_t open = tokens[i].find('[');
        if (open == std::string::npos)
            return fail(oe, TS_OE_PARAMETER_OUT_OF_RANGE, err,
                        "Parent path doesn't contain an index");
        std::string left = strip_spaces(tokens[i].substr(0, open)),
                    right = strip_spaces(tokens[i].substr(open + 1));
        if (left.empty())
            return fail(oe, TS_OE_PARAMETER_OUT_OF_RANGE, err, "Parent path doesn't contain a tag");
        if (right.empty() || right.back() != ']')
            return fail(oe, TS_OE_PARAMETER_OUT_OF_RANGE, err,
                        "Parent path doesn't contain the end of the index");
        uint32_t tag;
        if ((rc = path_tag(left, &tag, oe, err)))
            return rc;
        std::string index = strip_spaces(right.substr(0, right.size() - 1));
        long n = -1;
        if (index != "*") {
            char *end = nullptr;
            errno = 0;
            n = strtol(index.c_str(), &end, 10);
            if (index.empty() || *end || errno || n > INT32_MAX || n < INT32_MIN ||
                isspace(static_cast<unsigned char>(index[0])))
                return fail(oe, TS_OE_PARAMETER_OUT_OF_RANGE, err,
                            ("Not a valid index in parent path: [" + right).c_str());
            if (n < 0)
                return fail(oe, TS_OE_PARAMETER_OUT_OF_RANGE, err,
                            ("Negative index in parent path: " + index).c_str());
        }
        op.parents.emplace_back(tag, n);
    }
    return 0;
}

enum tag_op { OP_REMOVE, OP_KEEP };

int parse_tag_list(ts_modify *m, const json_t *list, tag_op op, bool force, ts_oe *oe, ts_err *err)
{
    if (!json_is_array(list))
        return fail(oe, TS_OE_BAD_REQUEST, err, "");
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *name = json_string_value(v);
        if (!name)
            return fail(oe, TS_OE_BAD_REQUEST, err, "");
        ts_modify::path_op p{{}, 0, nullptr};
        int rc = parse_path(name, p, oe, err);
        if (rc)
            return rc;
        if (p.parents.empty() &&
            (rc = check_force(name, p.tag, op == OP_REMOVE ? "removed" : "kept", force, oe, err)))
            return rc;
        if (op == OP_KEEP) {
            /* Orthanc keeps a path (and a tag, with all it contains) from the
             * anonymization's actions inside sequences */
            if (p.parents.empty())
                m->keep(p.tag);
            m->keep_paths.push_back(p);
        } else if (p.parents.empty()) {
            m->remove(p.tag);
        } else {
            m->paths.push_back(p);
        }
    }
    return 0;
}

// A replacement's value: a string, or for a sequence an array of objects whose
// members are replacements themselves.
bool value_ok(uint32_t tag, const json_t *v)
{
    char vr[3];
    ts_dicom_tag_vr(tag, vr);
    if (json_is_string(v) || json_is_null(v))
        return true;
    if (!json_is_array(v) || (strcmp(vr, "SQ") != 0 && strcmp(vr, "UN") != 0))
        return false;
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_object(item))
            return false;
        const char *name;
        const json_t *sub;
        json_object_foreach(const_cast<json_t *>(item), name, sub)
        {
            uint32_t t;
            if (!ts_dicom_parse_tag(name, &t) || !value_ok(t, sub))
                return false;
        }
    }
    return true;
}

int parse_replacements(ts_modify *m, const json_t *obj, bool force, ts_oe *oe, ts_err *err)
{
    if (!json_is_object(obj))
        return fail(oe, TS_OE_BAD_REQUEST, err, "");
    const char *name;
    json_t *v;
    json_object_foreach(const_cast<json_t *>(obj), name, v)
    {
        ts_modify::path_op p{{}, 0, nullptr};
        int rc = parse_path(name, p, oe, err);
        if (rc)
            return rc;
        if (!p.parents.empty()) {
            if (!value_ok(p.tag, v)) {
                std::string details = "Bad Parameter type for tag " + tag_text(p.tag);
                return fail(oe, TS_OE_BAD_PARAMETER_TYPE, err, details.c_str());
            }
            p.value = json_incref(v);
            m->paths.push_back(p);
            continue;
        }
        uint32_t tag = p.tag;
        if ((rc = check_force(name, tag, "replaced", force, oe, err)))
            return rc;
        if (!value_ok(tag, v)) {
            std::string details = "Bad Parameter type for tag " + tag_text(tag);
            return fail(oe, TS_OE_BAD_PARAMETER_TYPE, err, details.c_str());
        }
        m->replace(tag, v);
    }
    return 0;
}

// ---- applying ---------------------------------------------------------------

std::string decimal_of(const unsigned char *b, size_t n)
{
    std::vector<unsigned char> num(b, b + n);
    std::string digits;
    bool nonzero = true;
    while (nonzero) {
        unsigned rem = 0;
        nonzero = false;
        for (auto &byte : num) {
            unsigned cur = (rem << 8) | byte;
            byte = static_cast<unsigned char>(cur / 10);
            rem = cur % 10;
            if (byte)
                nonzero = true;
        }
        digits.push_back(static_cast<char>('0' + rem));
    }
    std::reverse(digits.begin(), digits.end());
    return digits;
}

// 2.25.<the 128 bits as a UUID of version 8 (custom), PS3.5 B.2>
std::string uid_from_bytes(unsigned char b[16])
{
    b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x80);
    b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
    return "2.25." + decimal_of(b, 16);
}

std::string map_uid(const ts_modify *m, const std::map<std::string, std::string> &overrides,
                    const std::string &original)
{
    auto o = overrides.find(original);
    if (o != overrides.end())
        return o->second;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    EVP_DigestUpdate(ctx, m->secret.data(), m->secret.size());
    EVP_DigestUpdate(ctx, "\0", 1);
    EVP_DigestUpdate(ctx, original.data(), original.size());
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    return uid_from_bytes(md);
}

// Each value of a (multi-valued) UID element mapped.
void map_element(const ts_modify *m, const std::map<std::string, std::string> &overrides,
                 DcmElement *el)
{
    OFString all;
    if (el->getOFStringArray(all).bad() || all.empty())
        return;
    std::string in(all.c_str(), all.length()), out;
    size_t b = 0;
    for (;;) {
        size_t e = in.find('\\', b);
        std::string v = strip(in.substr(b, e == std::string::npos ? std::string::npos : e - b));
        if (b)
            out += '\\';
        if (!v.empty())
            out += map_uid(m, overrides, v);
        if (e == std::string::npos)
            break;
        b = e + 1;
    }
    el->putOFStringArray(OFString(out.c_str()));
}

// Private data elements (gggg,xxyy) with yy >= 0x10 belong to the creator (gggg,00xx).
uint32_t creator_of(uint32_t tag)
{
    uint32_t elem = tag & 0xffff;
    if (!is_private(tag) || elem < 0x1000)
        return 0;
    return (tag & 0xffff0000u) | (elem >> 8);
}

// Where an element inside sequences is: each enclosing sequence and item number.
typedef std::vector<std::pair<uint32_t, unsigned long>> trail_t;

// Orthanc's DicomPath::IsMatch: a kept path names the element at trail/tag or
// a sequence that encloses it.
bool path_matches(const ts_modify::path_op &p, const trail_t &trail, uint32_t tag)
{
    if (trail.size() < p.parents.size())
        return false;
    for (size_t i = 0; i < p.parents.size(); i++)
        if (trail[i].first != p.parents[i].first ||
            (p.parents[i].second >= 0 &&
             trail[i].second != static_cast<unsigned long>(p.parents[i].second)))
            return false;
    return trail.size() == p.parents.size() ? tag == p.tag : trail[p.parents.size()].first == p.tag;
}

// Inside sequences, what Keep names is left alone by the anonymization.
bool kept_inside(const ts_modify *m, const trail_t &trail, uint32_t tag)
{
    if (trail.empty())
        return false;
    for (auto &p : m->keep_paths)
        if (path_matches(p, trail, tag))
            return true;
    return false;
}

void remove_private(const ts_modify *m, DcmItem *item, const std::set<uint32_t> &keep, bool deep,
                    trail_t &trail)
{
    std::set<uint32_t> creators;
    for (uint32_t t : keep)
        if (creator_of(t))
            creators.insert(creator_of(t));
    for (unsigned long i = item->card(); i-- > 0;) {
        DcmElement *el = item->getElement(i);
        uint32_t tag = TS_TAG(el->getGTag(), el->getETag());
        if (kept_inside(m, trail, tag))
            continue;
        if (is_private(tag) && !keep.count(tag) && !creators.count(tag)) {
            delete item->remove(el);
            continue;
        }
        if (deep && el->ident() == EVR_SQ) {
            DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(el);
            for (unsigned long k = 0; k < sq->card(); k++) {
                trail.emplace_back(tag, k);
                remove_private(m, sq->getItem(k), keep, deep, trail);
                trail.pop_back();
            }
        }
    }
}

// Curve Data (50xx,xxxx), Overlay Data (60xx,3000) and Overlay Comments (60xx,4000)
bool anon_range_removed(uint32_t tag)
{
    uint32_t g = tag >> 16, e = tag & 0xffff;
    if (g & 1)
        return false;
    return (g >= 0x5000 && g <= 0x50ff) ||
           (g >= 0x6000 && g <= 0x60ff && (e == 0x3000 || e == 0x4000));
}

// The profile's Z, X and U actions on one item (trail: where it is; empty at the top)
// (PS3.15 E.1: the profile applies to every attribute, nested ones included).
void anonymize_item(const ts_modify *m, const std::map<std::string, std::string> &overrides,
                    DcmItem *item, trail_t &trail)
{
    const bool top = trail.empty();
    for (unsigned long i = item->card(); i-- > 0;) {
        DcmElement *el = item->getElement(i);
        uint32_t tag = TS_TAG(el->getGTag(), el->getETag());
        if ((top && m->replaced(tag)) || kept_inside(m, trail, tag))
            continue;
        if (m->removals.count(tag) || (m->version != "2008" && anon_range_removed(tag))) {
            delete item->remove(el);
            continue;
        }
        if (m->clearings.count(tag)) {
            if (el->ident() == EVR_SQ) {
                DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(el);
                while (sq->card() > 0)
                    delete sq->remove(0UL);
            } else {
                el->putString("");
            }
            continue;
        }
        if (m->uids.count(tag) && el->ident() != EVR_SQ) {
            map_element(m, overrides, el);
            continue;
        }
        if (el->ident() == EVR_SQ) {
            DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(el);
            for (unsigned long k = 0; k < sq->card(); k++) {
                trail.emplace_back(tag, k);
                anonymize_item(m, overrides, sq->getItem(k), trail);
                trail.pop_back();
            }
        }
    }
}

// Orthanc's data URI: "data:<mime>;base64,<bytes>" for binary values.
bool data_uri(const char *s, std::string &bytes)
{
    if (strncmp(s, "data:", 5) != 0)
        return false;
    const char *comma = strstr(s, ";base64,");
    if (!comma)
        return false;
    const char *b64 = comma + 8;
    size_t n = strlen(b64);
    std::vector<unsigned char> out(n / 4 * 3 + 4);
    int len = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char *>(b64),
                              static_cast<int>(n));
    if (len < 0)
        return false;
    while (n > 0 && b64[n - 1] == '=') {
        len--;
        n--;
    }
    bytes.assign(reinterpret_cast<char *>(out.data()), static_cast<size_t>(len));
    return true;
}

int put_value(const ts_modify *m, DcmItem *item, uint32_t tag, const json_t *v, ts_oe *oe,
              ts_err *err);

// A private tag needs its block reserved by a private creator: the one in the
// dataset, else the body's PrivateCreator.
int private_tag(const ts_modify *m, DcmItem *item, uint32_t tag, DcmTag &out, ts_oe *oe,
                ts_err *err)
{
    uint32_t c = creator_of(tag);
    if (!c) {
        out = DcmTag(key_of(tag));
        return 0;
    }
    OFString creator;
    if (item->findAndGetOFString(key_of(c), creator).bad() || creator.empty()) {
        if (m->private_creator.empty())
            return fail(oe, TS_OE_BAD_REQUEST, err,
                        ("A private creator is needed for the private tag " + tag_text(tag) +
                         " (\"PrivateCreator\")")
                            .c_str());
        item->putAndInsertString(key_of(c), m->private_creator.c_str());
        creator = m->private_creator.c_str();
    }
    out = DcmTag(key_of(tag), creator.c_str());
    if (out.getEVR() == EVR_UNKNOWN || out.getEVR() == EVR_UNKNOWN2B)
        out.setVR(DcmVR(EVR_UN));
    return 0;
}

int put_value(const ts_modify *m, DcmItem *item, uint32_t tag, const json_t *v, ts_oe *oe,
              ts_err *err)
{
    DcmTag dtag;
    int rc = private_tag(m, item, tag, dtag, oe, err);
    if (rc)
        return rc;
    if (json_is_array(v)) {
        DcmSequenceOfItems *sq =
            new DcmSequenceOfItems(DcmTag(key_of(tag), dtag.getPrivateCreator()));
        size_t i;
        const json_t *obj;
        json_array_foreach(v, i, obj)
        {
            DcmItem *sub = new DcmItem();
            sq->append(sub);
            const char *name;
            json_t *val;
            json_object_foreach(const_cast<json_t *>(obj), name, val)
            {
                uint32_t t;
                ts_dicom_parse_tag(name, &t);
                if ((rc = put_value(m, sub, t, val, oe, err))) {
                    delete sq;
                    return rc;
                }
            }
        }
        item->insert(sq, OFTrue);
        return 0;
    }
    DcmElement *el = nullptr;
    if (DcmItem::newDicomElement(el, dtag).bad() || !el) {
        std::string d = "Cannot create the DICOM tag " + tag_text(tag);
        return fail(oe, TS_OE_BAD_PARAMETER_TYPE, err, d.c_str());
    }
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    std::string bytes;
    DcmEVR vr = el->ident();
    OFCondition cond;
    bool binary = vr == EVR_OB || vr == EVR_OW || vr == EVR_UN || vr == EVR_OF || vr == EVR_OD ||
                  vr == EVR_OL || vr == EVR_OV || vr == EVR_UNKNOWN || vr == EVR_UNKNOWN2B ||
                  dtag.getEVR() == EVR_UN;
    if (binary) {
        if (!data_uri(s, bytes))
            bytes = s;
        cond = el->putUint8Array(reinterpret_cast<const Uint8 *>(bytes.data()),
                                 static_cast<unsigned long>(bytes.size()));
    } else {
        cond = el->putString(s);
    }
    if (cond.bad()) {
        delete el;
        std::string d = "Bad Parameter type for tag " + tag_text(tag);
        return fail(oe, TS_OE_BAD_PARAMETER_TYPE, err, d.c_str());
    }
    item->insert(el, OFTrue);
    return 0;
}

std::string top_string(DcmDataset *ds, uint32_t tag)
{
    OFString v;
    if (ds->findAndGetOFStringArray(key_of(tag), v).bad())
        return std::string();
    return strip(std::string(v.c_str(), v.length()));
}

bool is_text_vr(DcmEVR vr)
{
    return vr == EVR_SH || vr == EVR_LO || vr == EVR_ST || vr == EVR_LT || vr == EVR_UT ||
           vr == EVR_PN || vr == EVR_UC;
}

bool has_non_ascii(DcmDataset *ds)
{
    DcmStack stack;
    while (ds->nextObject(stack, OFTrue).good()) {
        DcmObject *obj = stack.top();
        if (!is_text_vr(obj->ident()))
            continue;
        OFString v;
        if (static_cast<DcmElement *>(obj)->getOFStringArray(v).bad())
            continue;
        for (size_t i = 0; i < v.length(); i++)
            if (static_cast<unsigned char>(v[i]) >= 0x80)
                return true;
    }
    return false;
}

// The dataset is UTF-8 in memory (ts_dicom_open_*) whatever its
// SpecificCharacterSet says: back to that character set when every value fits
// in it (so that a modified file keeps its character set, as with Orthanc).
bool to_charset(DcmDataset *ds, const OFString &charset)
{
    DcmSpecificCharacterSet conv;
    if (conv.selectCharacterSet("ISO_IR 192", charset).bad())
        return false;
    DcmStack stack;
    while (ds->nextObject(stack, OFTrue).good()) {
        DcmObject *obj = stack.top();
        if (!is_text_vr(obj->ident()))
            continue;
        OFString v, converted;
        if (static_cast<DcmElement *>(obj)->getOFStringArray(v).good() &&
            conv.convertString(v, converted).bad())
            return false;
    }
    return ds->convertCharacterSet("ISO_IR 192", charset, 0, OFTrue).good();
}

// One path operation in the items it names (items that do not exist are
// left alone, as Orthanc does).
int apply_path(const ts_modify *m, DcmItem *item, const ts_modify::path_op &p, size_t depth,
               ts_oe *oe, ts_err *err)
{
    if (depth == p.parents.size()) {
        if (!p.value) {
            item->findAndDeleteElement(key_of(p.tag));
            return 0;
        }
        return put_value(m, item, p.tag, p.value, oe, err);
    }
    DcmElement *el = nullptr;
    if (item->findAndGetElement(key_of(p.parents[depth].first), el).bad() || !el ||
        el->ident() != EVR_SQ)
        return 0;
    DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(el);
    long want = p.parents[depth].second;
    for (unsigned long k = 0; k < sq->card(); k++) {
        if (want >= 0 && static_cast<unsigned long>(want) != k)
            continue;
        int rc = apply_path(m, sq->getItem(k), p, depth + 1, oe, err);
        if (rc)
            return rc;
    }
    return 0;
}

} // namespace

extern "C" int ts_modify_parse(const json_t *body, bool anonymize, ts_modify **out, ts_oe *oe,
                               ts_err *err)
{
    *out = nullptr;
    if (!json_is_object(body))
        return fail(oe, TS_OE_BAD_FILE_FORMAT, err, "");
    ts_modify *m = new ts_modify();
    int rc = 0;
    bool force = false;
    if (!get_bool(body, "Force", false, &force)) {
        rc = fail(oe, TS_OE_BAD_FILE_FORMAT, err, "Boolean value expected in field: Force");
        goto out;
    }
    if (anonymize) {
        const json_t *version = json_object_get(body, "DicomVersion");
        if (version && !json_is_string(version)) {
            rc = fail(oe, TS_OE_BAD_FILE_FORMAT, err, "");
            goto out;
        }
        std::string v = version ? json_string_value(version) : "2021b";
        if (!setup_anonymization(m, v)) {
            std::string d = "Unknown specific version of the DICOM standard: " + v;
            rc = fail(oe, TS_OE_PARAMETER_OUT_OF_RANGE, err, d.c_str());
            goto out;
        }
        bool keep_private = false;
        if (!get_bool(body, "KeepPrivateTags", false, &keep_private)) {
            rc = fail(oe, TS_OE_BAD_FILE_FORMAT, err,
                      "Boolean value expected in field: KeepPrivateTags");
            goto out;
        }
        if (keep_private)
            m->remove_private = false;
    } else if (json_object_get(body, "RemovePrivateTags")) {
        m->remove_private = true;
        m->private_keep.clear();
    }
    if (json_object_get(body, "Remove") &&
        (rc = parse_tag_list(m, json_object_get(body, "Remove"), OP_REMOVE, force, oe, err)))
        goto out;
    if (json_object_get(body, "Replace") &&
        (rc = parse_replacements(m, json_object_get(body, "Replace"), force, oe, err)))
        goto out;
    if (json_object_get(body, "Keep") &&
        (rc = parse_tag_list(m, json_object_get(body, "Keep"), OP_KEEP, force, oe, err)))
        goto out;
    if (json_object_get(body, "PrivateCreator")) {
        const char *pc = json_string_value(json_object_get(body, "PrivateCreator"));
        if (!pc) {
            rc = fail(oe, TS_OE_BAD_FILE_FORMAT, err, "");
            goto out;
        }
        m->private_creator = pc;
    }
out:
    if (rc) {
        delete m;
        return rc;
    }
    *out = m;
    return 0;
}

extern "C" void ts_modify_free(ts_modify *m)
{
    delete m;
}

extern "C" void ts_modify_set_level(ts_modify *m, int level)
{
    if (!m->anonymize)
        m->level = level;
}

extern "C" int ts_modify_level(const ts_modify *m)
{
    return m->level;
}

extern "C" bool ts_modify_is_anonymization(const ts_modify *m)
{
    return m->anonymize;
}

extern "C" int ts_modify_instance_level(const ts_modify *m)
{
    if (m->anonymize || m->replaced(TS_TAG_PATIENT_ID))
        return 0;
    if (m->replaced(TS_TAG_STUDY_INSTANCE_UID))
        return 1;
    if (m->replaced(TS_TAG_SERIES_INSTANCE_UID))
        return 2;
    return 3;
}

extern "C" int ts_modify_check(const ts_modify *m, ts_oe *oe, ts_err *err)
{
    static const uint32_t keys[] = {TS_TAG_PATIENT_ID, TS_TAG_STUDY_INSTANCE_UID,
                                    TS_TAG_SERIES_INSTANCE_UID, TS_TAG_SOP_INSTANCE_UID};
    for (uint32_t k : keys)
        if (m->removals.count(k))
            return fail(oe, TS_OE_BAD_REQUEST, err, "");
    if (m->anonymize)
        return 0;
    bool pid = m->replaced(TS_TAG_PATIENT_ID), study = m->replaced(TS_TAG_STUDY_INSTANCE_UID),
         series = m->replaced(TS_TAG_SERIES_INSTANCE_UID);
    switch (m->level) {
    case 0:
        if (!pid)
            return fail(oe, TS_OE_BAD_REQUEST, err,
                        "When modifying a patient, her PatientID is required to be modified");
        break;
    case 1:
        if (pid)
            return fail(oe, TS_OE_BAD_REQUEST, err,
                        "When modifying a study, the parent PatientID cannot be manually modified");
        break;
    case 2:
        if (pid)
            return fail(oe, TS_OE_BAD_REQUEST, err,
                        "When modifying a series, the parent PatientID cannot be manually "
                        "modified");
        if (study)
            return fail(oe, TS_OE_BAD_REQUEST, err,
                        "When modifying a series, the parent StudyInstanceUID cannot be manually "
                        "modified");
        break;
    default:
        if (pid)
            return fail(oe, TS_OE_BAD_REQUEST, err,
                        "When modifying an instance, the parent PatientID cannot be manually "
                        "modified");
        if (study)
            return fail(oe, TS_OE_BAD_REQUEST, err,
                        "When modifying an instance, the parent StudyInstanceUID cannot be "
                        "manually modified");
        if (series)
            return fail(oe, TS_OE_BAD_REQUEST, err,
                        "When modifying an instance, the parent SeriesInstanceUID cannot be "
                        "manually modified");
        break;
    }
    return 0;
}

extern "C" void ts_modify_set_secret(ts_modify *m, const char *secret)
{
    m->secret = secret;
}

extern "C" void ts_modify_set_anonymous_patient(ts_modify *m, const char *patient_id,
                                                const char *patient_name)
{
    if (!m->anonymize)
        return;
    if (!m->replaced(TS_TAG_PATIENT_ID)) {
        json_t *v = json_string(patient_id);
        m->replace(TS_TAG_PATIENT_ID, v);
        json_decref(v);
    }
    if (!m->replaced(TS_TAG_PATIENT_NAME)) {
        json_t *v = json_string(patient_name);
        m->replace(TS_TAG_PATIENT_NAME, v);
        json_decref(v);
    }
}

extern "C" void ts_modify_map_uid(const ts_modify *m, const char *original, char *out, size_t size)
{
    std::map<std::string, std::string> none;
    snprintf(out, size, "%s", map_uid(m, none, original).c_str());
}

extern "C" int ts_modify_apply(const ts_modify *m, ts_dicom *d, ts_oe *oe, ts_err *err)
{
    DcmDataset *ds = d->file.getDataset();
    // UIDs the body replaces stay what it says wherever they are referenced
    std::map<std::string, std::string> overrides;
    static const uint32_t idtags[] = {TS_TAG_STUDY_INSTANCE_UID, TS_TAG_SERIES_INSTANCE_UID,
                                      TS_TAG_SOP_INSTANCE_UID};
    for (uint32_t t : idtags) {
        auto it = m->replacements.find(t);
        std::string original = top_string(ds, t);
        if (it != m->replacements.end() && json_is_string(it->second) && !original.empty())
            overrides[original] = json_string_value(it->second);
    }
    trail_t trail;
    if (m->remove_private)
        remove_private(m, ds, m->private_keep, m->anonymize, trail);
    if (m->anonymize) {
        anonymize_item(m, overrides, ds, trail);
    } else {
        for (uint32_t t : m->clearings) {
            DcmElement *el = nullptr;
            if (ds->findAndGetElement(key_of(t), el).good() && el)
                el->putString("");
        }
        for (uint32_t t : m->removals)
            ds->findAndDeleteElement(key_of(t));
        // the UIDs of the level modified and below get new values
        const bool map[] = {m->level <= 1 && !m->keep_study, m->level <= 2 && !m->keep_series,
                            !m->keep_sop};
        for (int i = 0; i < 3; i++) {
            if (!map[i] || m->replaced(idtags[i]))
                continue;
            DcmElement *el = nullptr;
            if (ds->findAndGetElement(key_of(idtags[i]), el).good() && el)
                map_element(m, overrides, el);
        }
    }
    for (auto &r : m->replacements) {
        int rc = put_value(m, ds, r.first, r.second, oe, err);
        if (rc)
            return rc;
    }
    for (auto &c : m->copies) {
        if (!c.second)
            ds->findAndDeleteElement(key_of(c.first));
        else
            ds->insert(static_cast<DcmElement *>(c.second->clone()), OFTrue);
    }
    for (auto &p : m->paths) {
        int rc = apply_path(m, ds, p, 0, oe, err);
        if (rc)
            return rc;
    }
    return 0;
}

namespace
{

// PS3.3 (2011) Table C.7-1 Patient Module with the Issuer of Patient ID macro,
// and Table C.7-3 General Study Module: the lists Orthanc 1.10.1 uses.
const uint32_t PATIENT_MODULE[] = {
    0x00081120, 0x00100010, 0x00100020, 0x00100021, 0x00100024, 0x00100030, 0x00100032, 0x00100040,
    0x00101000, 0x00101001, 0x00101002, 0x00102160, 0x00102201, 0x00102202, 0x00102292, 0x00102293,
    0x00102294, 0x00102297, 0x00102298, 0x00102299, 0x00104000, 0x00120062, 0x00120063, 0x00120064};
const uint32_t STUDY_MODULE[] = {0x00080020, 0x00080030, 0x00080050, 0x00080051, 0x00080090,
                                 0x00080096, 0x00081030, 0x00081032, 0x00081048, 0x00081049,
                                 0x00081060, 0x00081062, 0x00081110, 0x0020000d, 0x00200010,
                                 0x00321034, 0x00401012};

// Table C.7-5 General Series Module with the Performed Procedure Step Summary
// macro (Orthanc's list; its (0029,0109) is read as Largest Pixel Value in
// Series, (0028,0109)).
const uint32_t SERIES_MODULE[] = {
    0x00080021, 0x00080031, 0x00080060, 0x0008103e, 0x0008103f, 0x00081050, 0x00081052,
    0x00081070, 0x00081072, 0x00081111, 0x00081250, 0x00102210, 0x00180015, 0x00181030,
    0x00185100, 0x0020000e, 0x00200011, 0x00200060, 0x00280108, 0x00280109, 0x00400244,
    0x00400245, 0x00400253, 0x00400254, 0x00400260, 0x00400275, 0x00400280};

} // namespace

extern "C" const uint32_t *ts_dicom_module_tags(int module, size_t *n)
{
    if (module == 0) {
        *n = sizeof(PATIENT_MODULE) / sizeof(PATIENT_MODULE[0]);
        return PATIENT_MODULE;
    }
    if (module == 2) {
        *n = sizeof(SERIES_MODULE) / sizeof(SERIES_MODULE[0]);
        return SERIES_MODULE;
    }
    *n = sizeof(STUDY_MODULE) / sizeof(STUDY_MODULE[0]);
    return STUDY_MODULE;
}

extern "C" void ts_modify_copy_from(ts_modify *m, const ts_dicom *src, const uint32_t *tags,
                                    size_t n)
{
    DcmDataset *ds = const_cast<ts_dicom *>(src)->file.getDataset();
    for (size_t i = 0; i < n; i++) {
        DcmElement *el = nullptr;
        auto old = m->copies.find(tags[i]);
        if (old != m->copies.end())
            delete old->second;
        if (ds->findAndGetElement(key_of(tags[i]), el).good() && el)
            m->copies[tags[i]] = static_cast<DcmElement *>(el->clone());
        else
            m->copies[tags[i]] = nullptr;
        m->erase_replacement(tags[i]);
    }
}

extern "C" int ts_dicom_save_file(ts_dicom *d, const char *path, ts_err *err)
{
    DcmDataset *ds = d->file.getDataset();
    OFString charset;
    if (ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).bad())
        charset.clear();
    if (has_non_ascii(ds) && charset != "ISO_IR 192" &&
        (charset.empty() || !to_charset(ds, charset)))
        ds->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    E_TransferSyntax xfer = d->write_xfer != EXS_Unknown ? d->write_xfer : ds->getOriginalXfer();
    if (xfer == EXS_Unknown)
        xfer = EXS_LittleEndianExplicit;
    OFCondition cond = d->file.saveFile(path, xfer, EET_UndefinedLength, EGL_recalcGL, EPD_noChange,
                                        0, 0, EWM_updateMeta);
    if (cond.bad())
        return ts_err_set(err, TS_EIO, "write %s: %s", path, cond.text());
    return 0;
}

extern "C" int ts_dicom_transcode(ts_dicom *d, const char *to_uid, unsigned flags, bool keep_sop,
                                  ts_err *err)
{
    DcmDataset *ds = d->file.getDataset();
    E_TransferSyntax from = d->write_xfer;
    if (from == EXS_Unknown && !d->transfer_syntax.empty())
        from = DcmXfer(d->transfer_syntax.c_str()).getXfer();
    OFString sop;
    if (ds->findAndGetOFString(DCM_SOPInstanceUID, sop).bad())
        sop.clear();
    int rc = ts_transcode_dataset(ds, from, to_uid, flags, err);
    if (rc)
        return rc;
    OFString now;
    if (keep_sop && !sop.empty() && ds->findAndGetOFString(DCM_SOPInstanceUID, now).good() &&
        now != sop)
        ds->putAndInsertString(DCM_SOPInstanceUID, sop.c_str());
    d->write_xfer = DcmXfer(to_uid).getXfer();
    return 0;
}

extern "C" void ts_dicom_generate_uid(char *out, size_t size)
{
    unsigned char b[16];
    RAND_bytes(b, sizeof(b));
    snprintf(out, size, "%s", uid_from_bytes(b).c_str());
}
