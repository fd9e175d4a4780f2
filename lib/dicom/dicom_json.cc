// JSON forms of a parsed dataset (see dicom.h): Orthanc's /tags, /simplified-tags
// and MainDicomTags exactly as Orthanc 1.10.1 writes them, and the DICOM JSON
// model of PS3.18 F.2 for DICOMweb. The reference answers recorded from Orthanc
// are in tests/data/orthanc; where Orthanc has a rule, the rule is stated here.
#include "dicom_internal.hh"

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace
{

// Orthanc's ORTHANC_MAXIMUM_TAG_LENGTH: a longer string is "TooLong" in /tags
// and is left out of MainDicomTags.
const size_t ORTHANC_MAX_STRING_LENGTH = 256;

// ---- small helpers -----------------------------------------------------------

DcmDataset &dataset_of(const ts_dicom *d)
{
    // dcmtk's getters are not const (lazy loading, cached names); reading
    // does not change what the dataset holds.
    return *const_cast<DcmFileFormat &>(d->file).getDataset();
}

json_t *must(json_t *j)
{
    if (!j)
        abort(); // out of memory (docs/style.md: out of memory aborts)
    return j;
}

void set_new(json_t *obj, const char *key, json_t *value)
{
    if (json_object_set_new(obj, key, must(value)) != 0)
        abort();
}

void append_new(json_t *array, json_t *value)
{
    if (json_array_append_new(array, must(value)) != 0)
        abort();
}

// A JSON string from bytes that should be UTF-8. The parser converts the dataset
// to UTF-8; bytes it left alone are either from a dataset without
// SpecificCharacterSet, which Orthanc reads as Latin-1 (its default
// "DefaultEncoding"), or from one whose conversion failed. Both are read as
// Latin-1 here, so that the answer is always valid JSON.
json_t *utf8_string(const std::string &s)
{
    json_t *j = json_stringn(s.data(), s.size());
    if (j)
        return j;
    std::string utf8;
    for (unsigned char c : s) {
        if (c < 0x80) {
            utf8 += static_cast<char>(c);
        } else {
            utf8 += static_cast<char>(0xc0 | (c >> 6));
            utf8 += static_cast<char>(0x80 | (c & 0x3f));
        }
    }
    return must(json_stringn(utf8.data(), utf8.size()));
}

std::string format_tag(const char *fmt, const DcmTagKey &key)
{
    char buf[16];
    snprintf(buf, sizeof(buf), fmt, key.getGroup(), key.getElement());
    return buf;
}

bool is_binary_vr(DcmEVR vr)
{
    switch (vr) {
    case EVR_OB:
    case EVR_OD:
    case EVR_OF:
    case EVR_OL:
    case EVR_OV:
    case EVR_OW:
    case EVR_UN:
    case EVR_ox:
    case EVR_px:
    case EVR_lt:
    case EVR_UNKNOWN:
    case EVR_UNKNOWN2B:
        return true;
    default:
        return false;
    }
}

// The element's value as dcmtk's getString() gives it (the whole value,
// multiple values joined by '\'); false for elements that are not strings.
bool element_string(DcmElement &el, std::string &out)
{
    char *c = nullptr;
    if (!el.isaString() || el.getString(c).bad())
        return false;
    out = c ? c : ""; // NULL is dcmtk's empty value; a NUL byte ends the value, as in Orthanc
    return true;
}

// Printable ASCII, tabs and line breaks (Orthanc's Toolbox::IsAsciiString).
bool is_ascii_text(const std::string &s)
{
    return std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return c < 0x7f && (c >= 0x20 || c == '\t' || c == '\r' || c == '\n');
    });
}

// An element with VR UN whose tag the dictionary knows with a string VR
// (private tags declared in a dictionary, or public tags in explicit VR files
// written by tools that did not know them, DICOM CP 246) is read as a string
// of that VR: one trailing NUL removed, and for private tags only if it is
// plain ASCII (nothing says a private tag uses the dataset's character set).
// Orthanc >= 1.9.1 does this in /tags and in DICOMweb.
bool un_as_string(DcmElement &el, DcmEVR &vr, std::string &out)
{
    if (el.getVR() != EVR_UN)
        return false;
    const DcmDataDictionary &dict = dcmDataDict.rdlock();
    const DcmDictEntry *entry =
        dict.findEntry(el.getTag().getXTag(), el.getTag().getPrivateCreator());
    const bool string_vr = entry && entry->getVR().isaString();
    if (string_vr)
        vr = entry->getVR().getEVR();
    dcmDataDict.rdunlock();
    if (!string_vr)
        return false;
    Uint8 *data = nullptr;
    if (el.getUint8Array(data).bad())
        return false;
    Uint32 len = el.getLength();
    if (!data || len == 0) {
        out.clear();
        return true;
    }
    if (len % 2 == 0 && data[len - 1] == '\0')
        len--;
    std::string s(reinterpret_cast<const char *>(data), len);
    if (el.getTag().isPrivate() && !is_ascii_text(s))
        return false;
    out = std::move(s);
    return true;
}

// "%.17g": what Orthanc's std::setprecision(17) stream writes for FL and FD.
std::string format_double17(double v)
{
    char buf[40];
    snprintf(buf, sizeof(buf), "%.17g", v);
    return buf;
}

// ---- Orthanc's /tags (DicomToJsonFormat_Full) ----------------------------------

// Orthanc's DicomValue with DicomToJsonFlags_ConvertBinaryToNull: a string or null.
struct OrthancValue {
    bool null = true;
    std::string text;
};

OrthancValue orthanc_text(std::string s)
{
    OrthancValue v;
    v.null = false;
    v.text = std::move(s);
    return v;
}

// Orthanc joins every value of a numeric element with '\' when the length holds
// more than one, reads just the first otherwise, and gives null when even that
// fails (an empty element).
template <typename T, typename Get, typename Fmt>
OrthancValue orthanc_numbers(DcmElement &el, Get get, Fmt fmt)
{
    const Uint32 len = el.getLength();
    T value;
    if (len > sizeof(T) && len % sizeof(T) == 0) {
        std::string joined;
        bool first = true;
        for (unsigned long i = 0; i < len / sizeof(T); i++) {
            if ((el.*get)(value, i).good()) {
                joined += first ? "" : "\\";
                joined += fmt(value);
                first = false;
            }
        }
        return orthanc_text(joined);
    }
    if ((el.*get)(value, 0).good())
        return orthanc_text(fmt(value));
    return OrthancValue();
}

template <typename T> std::string decimal(T v)
{
    return std::to_string(v);
}

// Orthanc's FromDcmtkBridge::ConvertLeafElement for /tags and the main tags:
// strings as they are, numbers as decimal text, AT as "gggg,eeee" (first value
// only), and null for binary VRs (OB, OW, OF, UN, ...), pixel data and empty
// numbers.
OrthancValue orthanc_leaf_value(DcmElement &el)
{
    std::string s;
    if (element_string(el, s))
        return orthanc_text(s);
    DcmEVR dict_vr = EVR_UN;
    if (un_as_string(el, dict_vr, s))
        return orthanc_text(s);
    switch (el.getVR()) {
    case EVR_SL:
        return orthanc_numbers<Sint32>(el, &DcmElement::getSint32, decimal<Sint32>);
    case EVR_SS:
        return orthanc_numbers<Sint16>(el, &DcmElement::getSint16, decimal<Sint16>);
    case EVR_UL:
        return orthanc_numbers<Uint32>(el, &DcmElement::getUint32, decimal<Uint32>);
    case EVR_US:
        return orthanc_numbers<Uint16>(el, &DcmElement::getUint16, decimal<Uint16>);
    case EVR_FL:
        return orthanc_numbers<Float32>(el, &DcmElement::getFloat32,
                                        [](Float32 v) { return format_double17(v); });
    case EVR_FD:
        return orthanc_numbers<Float64>(el, &DcmElement::getFloat64, format_double17);
    case EVR_AT: {
        DcmTagKey key;
        if (el.getTagVal(key, 0).good())
            return orthanc_text(format_tag("%04x,%04x", key));
        return OrthancValue();
    }
    default:
        return OrthancValue(); // binary, SQ and dcmtk's internal VRs
    }
}

// Tag names come from dcmtk's dictionary (private ones through their private
// creator), except for a few main tags that Orthanc names itself because
// dcmtk's dictionary changed them between versions (FromDcmtkBridge's
// GetTagNameInternal). Unknown tags are "Unknown Tag & Data".
std::string orthanc_tag_name(const DcmTag &tag)
{
    struct Patch {
        Uint16 group, element;
        const char *name;
    };
    static const Patch patched[] = {
        {0x0008, 0x0050, "AccessionNumber"},
        {0x0008, 0x0018, "SOPInstanceUID"},
        {0x0010, 0x0020, "PatientID"},
        {0x0020, 0x000e, "SeriesInstanceUID"},
        {0x0020, 0x000d, "StudyInstanceUID"},
        {0x7fe0, 0x0010, "PixelData"},
        {0x0054, 0x1330, "ImageIndex"},
        {0x0020, 0x0013, "InstanceNumber"},
        {0x0054, 0x0081, "NumberOfSlices"},
        {0x0028, 0x0008, "NumberOfFrames"},
        {0x0018, 0x1090, "CardiacNumberOfImages"},
        {0x0020, 0x1002, "ImagesInAcquisition"},
        {0x0010, 0x0010, "PatientName"},
        {0x0020, 0x0032, "ImagePositionPatient"},
        {0x0020, 0x0037, "ImageOrientationPatient"},
        {0x0010, 0x1000, "OtherPatientIDs"},
    };
    const Patch *end = patched + sizeof(patched) / sizeof(*patched);
    const Patch *p = std::find_if(patched, end, [&tag](const Patch &q) {
        return tag.getGroup() == q.group && tag.getElement() == q.element;
    });
    if (p != end)
        return p->name;
    DcmTag copy(tag); // getTagName() caches the name in the tag
    const char *name = copy.getTagName();
    return name ? name : DcmTag_ERROR_TagName;
}

// Tags whose values are shown whatever their length (Orthanc's ?ignore-length).
struct FullLength {
    const uint32_t *tags;
    size_t n;
    bool has(const DcmTagKey &key) const
    {
        uint32_t t = TS_TAG(key.getGroup(), key.getElement());
        return std::find(tags, tags + n, t) != tags + n;
    }
};

json_t *orthanc_dataset(DcmItem &item, bool top_level, const FullLength &full);

// {"Name": ..., ["PrivateCreator": ...,] "Type": ..., "Value": ...}
json_t *orthanc_leaf(DcmElement &el, const FullLength &full)
{
    json_t *node = must(json_object());
    set_new(node, "Name", utf8_string(orthanc_tag_name(el.getTag())));
    if (const char *creator = el.getTag().getPrivateCreator())
        set_new(node, "PrivateCreator", utf8_string(creator));
    OrthancValue v = orthanc_leaf_value(el);
    if (v.null) {
        set_new(node, "Type", json_string("Null"));
        set_new(node, "Value", json_null());
    } else if (v.text.size() > ORTHANC_MAX_STRING_LENGTH && !full.has(el.getTag())) {
        set_new(node, "Type", json_string("TooLong"));
        set_new(node, "Value", json_null());
    } else {
        set_new(node, "Type", json_string("String"));
        set_new(node, "Value", utf8_string(v.text));
    }
    return node;
}

// {"Name": ..., "Type": "Sequence", "Value": [{item}, ...]}; Orthanc gives no
// PrivateCreator for sequences.
json_t *orthanc_sequence(DcmSequenceOfItems &sq, const FullLength &full)
{
    json_t *node = must(json_object());
    set_new(node, "Name", utf8_string(orthanc_tag_name(sq.getTag())));
    set_new(node, "Type", json_string("Sequence"));
    json_t *items = must(json_array());
    for (unsigned long i = 0; i < sq.card(); i++)
        append_new(items, orthanc_dataset(*sq.getItem(i), false, full));
    set_new(node, "Value", items);
    return node;
}

// Every element, private and unknown ones included, keyed "gggg,eeee" (lower
// case). On the top level Orthanc stops after PixelData (it skips trailing
// padding, DicomToJsonFlags_StopAfterPixelData); group lengths are kept.
json_t *orthanc_dataset(DcmItem &item, bool top_level, const FullLength &full)
{
    json_t *obj = must(json_object());
    const DcmTagKey pixel_data(0x7fe0, 0x0010);
    for (unsigned long i = 0; i < item.card(); i++) {
        DcmElement *el = item.getElement(i);
        const DcmTag &tag = el->getTag();
        if (top_level && tag > pixel_data)
            break;
        json_t *node = el->isLeaf()
                           ? orthanc_leaf(*el, full)
                           : orthanc_sequence(*static_cast<DcmSequenceOfItems *>(el), full);
        set_new(obj, format_tag("%04x,%04x", tag).c_str(), node);
    }
    return obj;
}

// Orthanc's Toolbox::SimplifyDicomAsJson: {"Name": value}, where a String is
// its value, a Sequence an array of simplified items, anything else null. When
// two tags share a name (private creators, unknown tags) the last one wins.
json_t *simplify(const json_t *full)
{
    json_t *out = must(json_object());
    const char *key;
    json_t *node;
    json_object_foreach(const_cast<json_t *>(full), key, node)
    {
        const char *name = json_string_value(json_object_get(node, "Name"));
        const char *type = json_string_value(json_object_get(node, "Type"));
        json_t *value = json_object_get(node, "Value");
        json_t *simple;
        if (strcmp(type, "String") == 0) {
            simple = json_incref(value);
        } else if (strcmp(type, "Sequence") == 0) {
            simple = must(json_array());
            size_t i;
            json_t *child;
            json_array_foreach(value, i, child)
            {
                append_new(simple, simplify(child));
            }
        } else {
            simple = json_null();
        }
        set_new(out, name, simple);
    }
    return out;
}

// ---- Orthanc's MainDicomTags -----------------------------------------------------

struct MainTag {
    Uint16 group, element;
    const char *name;
};

// Orthanc 1.10.1's lists (DicomMap.cpp, database schema v6), in its order.
const MainTag PATIENT_TAGS[] = {
    {0x0010, 0x0010, "PatientName"}, {0x0010, 0x0030, "PatientBirthDate"},
    {0x0010, 0x0040, "PatientSex"},  {0x0010, 0x1000, "OtherPatientIDs"},
    {0x0010, 0x0020, "PatientID"},
};
const MainTag STUDY_TAGS[] = {
    {0x0008, 0x0020, "StudyDate"},
    {0x0008, 0x0030, "StudyTime"},
    {0x0020, 0x0010, "StudyID"},
    {0x0008, 0x1030, "StudyDescription"},
    {0x0008, 0x0050, "AccessionNumber"},
    {0x0020, 0x000d, "StudyInstanceUID"},
    {0x0032, 0x1060, "RequestedProcedureDescription"},
    {0x0008, 0x0080, "InstitutionName"},
    {0x0032, 0x1032, "RequestingPhysician"},
    {0x0008, 0x0090, "ReferringPhysicianName"},
};
const MainTag SERIES_TAGS[] = {
    {0x0008, 0x0021, "SeriesDate"},
    {0x0008, 0x0031, "SeriesTime"},
    {0x0008, 0x0060, "Modality"},
    {0x0008, 0x0070, "Manufacturer"},
    {0x0008, 0x1010, "StationName"},
    {0x0008, 0x103e, "SeriesDescription"},
    {0x0018, 0x0015, "BodyPartExamined"},
    {0x0018, 0x0024, "SequenceName"},
    {0x0018, 0x1030, "ProtocolName"},
    {0x0020, 0x0011, "SeriesNumber"},
    {0x0018, 0x1090, "CardiacNumberOfImages"},
    {0x0020, 0x1002, "ImagesInAcquisition"},
    {0x0020, 0x0105, "NumberOfTemporalPositions"},
    {0x0054, 0x0081, "NumberOfSlices"},
    {0x0054, 0x0101, "NumberOfTimeSlices"},
    {0x0020, 0x000e, "SeriesInstanceUID"},
    {0x0020, 0x0037, "ImageOrientationPatient"},
    {0x0054, 0x1000, "SeriesType"},
    {0x0008, 0x1070, "OperatorsName"},
    {0x0040, 0x0254, "PerformedProcedureStepDescription"},
    {0x0018, 0x1400, "AcquisitionDeviceProcessingDescription"},
    {0x0018, 0x0010, "ContrastBolusAgent"},
};
const MainTag INSTANCE_TAGS[] = {
    {0x0008, 0x0012, "InstanceCreationDate"},
    {0x0008, 0x0013, "InstanceCreationTime"},
    {0x0020, 0x0012, "AcquisitionNumber"},
    {0x0054, 0x1330, "ImageIndex"},
    {0x0020, 0x0013, "InstanceNumber"},
    {0x0028, 0x0008, "NumberOfFrames"},
    {0x0020, 0x0100, "TemporalPositionIdentifier"},
    {0x0008, 0x0018, "SOPInstanceUID"},
    {0x0020, 0x0032, "ImagePositionPatient"},
    {0x0020, 0x4000, "ImageComments"},
    {0x0020, 0x0037, "ImageOrientationPatient"},
};

struct MainTagList {
    const MainTag *tags;
    size_t count;
};

template <size_t N> MainTagList list_of(const MainTag (&tags)[N])
{
    return {tags, N};
}

MainTagList main_tags_of(ts_level level)
{
    switch (level) {
    case TS_LEVEL_PATIENT:
        return list_of(PATIENT_TAGS);
    case TS_LEVEL_STUDY:
        return list_of(STUDY_TAGS);
    case TS_LEVEL_SERIES:
        return list_of(SERIES_TAGS);
    default:
        return list_of(INSTANCE_TAGS);
    }
}

// ---- DICOM JSON model (PS3.18 F.2) ------------------------------------------------

// Where BulkDataURIs go: "<prefix>/<tag>" on the top level and
// "<prefix>/<sequence tag>/<item number from 1>/<tag>" inside sequences, tags as
// 8 lower-case hex digits: the scheme of Orthanc's DICOMweb plugin. Without a
// prefix, bulk data elements are left out.
struct BulkPath {
    const char *prefix;         // NULL: leave bulk data out (or inline it)
    std::string path;           // prefix plus the sequence/item steps down to this item
    bool inline_binary = false; // bulk data as InlineBinary (base64) instead
};

// An element's value bytes (little endian) in base64; false when they cannot be
// read as one value (encapsulated pixel data).
bool inline_binary(DcmElement &el, OFString &out)
{
    Uint32 len = el.getLength();
    std::string bytes(len, '\0');
    if (len > 0 && el.getPartialValue(&bytes[0], 0, len, nullptr, EBO_LittleEndian).bad())
        return false;
    OFStandard::encodeBase64(reinterpret_cast<const unsigned char *>(bytes.data()), bytes.size(),
                             out);
    return true;
}

json_t *dicomweb_dataset(DcmItem &item, const BulkPath &bulk);

// FormatDouble of Orthanc: a value within 100 epsilons of an integer is written
// as that integer (DS "5.000000" is 5), anything else as a real.
json_t *dicomweb_number(double v)
{
    if (!std::isfinite(v))
        return nullptr; // JSON has no NaN or infinity: the value is left out
    if (std::fabs(v) < 9.2e18) {
        long long r = std::llround(v);
        if (std::fabs(v - static_cast<double>(r)) <= DBL_EPSILON * 100.0)
            return must(json_integer(r));
    }
    return must(json_real(v));
}

std::string strip_spaces(const std::string &s)
{
    size_t b = s.find_first_not_of(' ');
    if (b == std::string::npos)
        return "";
    size_t e = s.find_last_not_of(' ');
    return s.substr(b, e - b + 1);
}

// One value of a string VR. IS and DS become numbers (spaces stripped, empty is
// null, a value that does not parse is left out: nullptr). PN becomes
// {"Alphabetic", "Ideographic", "Phonetic"} from its '='-separated groups
// (empty PN: {}). Other empty values are null.
json_t *dicomweb_string_value(DcmEVR vr, const std::string &token)
{
    switch (vr) {
    case EVR_IS: {
        std::string t = strip_spaces(token);
        if (t.empty())
            return json_null();
        char *end = nullptr;
        errno = 0;
        long long v = strtoll(t.c_str(), &end, 10);
        if (*end != '\0' || errno == ERANGE)
            return nullptr;
        return must(json_integer(v));
    }
    case EVR_DS: {
        std::string t = strip_spaces(token);
        if (t.empty())
            return json_null();
        if (t.find_first_of("xXnN") != std::string::npos) // strtod's hex, inf and nan
            return nullptr;
        char *end = nullptr;
        double v = strtod(t.c_str(), &end);
        if (*end != '\0')
            return nullptr;
        return dicomweb_number(v);
    }
    case EVR_PN: {
        json_t *pn = must(json_object());
        if (token.empty())
            return pn;
        static const char *const groups[] = {"Alphabetic", "Ideographic", "Phonetic"};
        size_t start = 0;
        for (int g = 0; g < 3; g++) {
            size_t eq = token.find('=', start);
            set_new(pn, groups[g], utf8_string(token.substr(start, eq - start)));
            if (eq == std::string::npos)
                break;
            start = eq + 1;
        }
        return pn;
    }
    default:
        return token.empty() ? json_null() : utf8_string(token);
    }
}

// Texts hold a single value that may contain '\' (PS3.5 6.2); the other string
// VRs are split on '\'. (Orthanc splits texts too; the standard does not.)
bool is_single_valued_text(DcmEVR vr)
{
    return vr == EVR_LT || vr == EVR_ST || vr == EVR_UT || vr == EVR_UR;
}

json_t *dicomweb_strings(DcmEVR vr, const DcmTagKey &key, const std::string &value)
{
    std::vector<std::string> tokens;
    if (is_single_valued_text(vr)) {
        tokens.push_back(value);
    } else {
        size_t start = 0, bs;
        while ((bs = value.find('\\', start)) != std::string::npos) {
            tokens.push_back(value.substr(start, bs - start));
            start = bs + 1;
        }
        tokens.push_back(value.substr(start));
    }
    // "\ISO 2022 IR 87": the empty first value means the default repertoire,
    // which DICOM JSON (always UTF-8) does not list.
    if (key == DCM_SpecificCharacterSet && tokens.size() > 1 && tokens[0].empty())
        tokens.erase(tokens.begin());
    json_t *values = must(json_array());
    for (const std::string &t : tokens)
        if (json_t *v = dicomweb_string_value(vr, t))
            append_new(values, v);
    return values;
}

template <typename T, typename Get> json_t *dicomweb_numbers(DcmElement &el, Get get, bool as_real)
{
    json_t *values = must(json_array());
    T v;
    for (unsigned long i = 0; i < el.getLength() / sizeof(T); i++) {
        if ((el.*get)(v, i).bad())
            break;
        json_t *j = as_real ? dicomweb_number(static_cast<double>(v))
                            : must(json_integer(static_cast<json_int_t>(v)));
        if (j)
            append_new(values, j);
    }
    return values;
}

json_t *dicomweb_attribute_tags(DcmElement &el)
{
    json_t *values = must(json_array());
    DcmTagKey key;
    for (unsigned long i = 0; i < el.getVM() && el.getTagVal(key, i).good(); i++)
        append_new(values, json_string(format_tag("%04X%04X", key).c_str()));
    return values;
}

// The "Value" array of a non-empty numeric or AT leaf, or nullptr for a VR that
// has no JSON form.
json_t *dicomweb_numeric_values(DcmElement &el)
{
    switch (el.getVR()) {
    case EVR_US:
        return dicomweb_numbers<Uint16>(el, &DcmElement::getUint16, false);
    case EVR_SS:
        return dicomweb_numbers<Sint16>(el, &DcmElement::getSint16, false);
    case EVR_UL:
        return dicomweb_numbers<Uint32>(el, &DcmElement::getUint32, false);
    case EVR_SL:
        return dicomweb_numbers<Sint32>(el, &DcmElement::getSint32, false);
    case EVR_SV:
        return dicomweb_numbers<Sint64>(el, &DcmElement::getSint64, false);
    case EVR_UV: // above 2^63 only as a real: json_int_t is signed
        return dicomweb_numbers<Uint64>(el, &DcmElement::getUint64, true);
    case EVR_FL:
        return dicomweb_numbers<Float32>(el, &DcmElement::getFloat32, true);
    case EVR_FD:
        return dicomweb_numbers<Float64>(el, &DcmElement::getFloat64, true);
    case EVR_AT:
        return dicomweb_attribute_tags(el);
    default:
        return nullptr;
    }
}

// The VR as DICOM names it; dcmtk's internal VRs map to a real one (ox, px: OB
// or OW; xs: US; lt: OW), unknown VRs to UN.
const char *dicomweb_vr_name(DcmEVR vr)
{
    return DcmVR(vr).getValidVRName();
}

// Emptiness from the length as read: dcmtk's getLength() of compressed pixel
// data is 0 (it measures in implicit little endian, where it cannot be written).
bool is_empty(DcmElement &el)
{
    return el.getLengthField() == 0;
}

// {"vr": ..., "Value": [...]} or {"vr": ..., "BulkDataURI": ...}. An empty
// element has only its vr (PS3.18 F.2.5). A UN element read as a string (see
// un_as_string) gets its dictionary VR. Returns nullptr when the element is
// left out: bulk data without a prefix, or a VR with no JSON form.
json_t *dicomweb_leaf(DcmElement &el, const BulkPath &bulk)
{
    std::string s;
    DcmEVR vr = el.getVR();
    const bool is_string = element_string(el, s) || un_as_string(el, vr, s);
    json_t *node = must(json_object());
    set_new(node, "vr", json_string(dicomweb_vr_name(vr)));
    json_t *values = nullptr;
    if (is_string) {
        if (!s.empty() && s.back() == '\0') // UI padding, as Orthanc strips it
            s.pop_back();
        if (s.empty())
            return node;
        values = dicomweb_strings(vr, el.getTag(), s);
    } else if (is_binary_vr(vr) || el.ident() == EVR_PixelData) {
        if (is_empty(el))
            return node;
        OFString b64;
        if (bulk.inline_binary && inline_binary(el, b64)) {
            set_new(node, "InlineBinary", json_stringn(b64.c_str(), b64.length()));
            return node;
        }
        if (!bulk.prefix) {
            json_decref(node);
            return nullptr;
        }
        std::string uri = bulk.path + "/" + format_tag("%04x%04x", el.getTag());
        set_new(node, "BulkDataURI", utf8_string(uri));
        return node;
    } else {
        if (is_empty(el))
            return node;
        values = dicomweb_numeric_values(el);
        if (!values) {
            json_decref(node);
            return nullptr;
        }
    }
    set_new(node, "Value", values);
    return node;
}

// {"vr": "SQ", "Value": [{item}, ...]}; no Value for an empty sequence.
json_t *dicomweb_sequence(DcmSequenceOfItems &sq, const BulkPath &bulk)
{
    json_t *node = must(json_object());
    set_new(node, "vr", json_string("SQ"));
    if (sq.card() == 0)
        return node;
    json_t *items = must(json_array());
    const std::string step = bulk.path + "/" + format_tag("%04x%04x", sq.getTag()) + "/";
    for (unsigned long i = 0; i < sq.card(); i++) {
        BulkPath child{bulk.prefix, step + std::to_string(i + 1), bulk.inline_binary};
        append_new(items, dicomweb_dataset(*sq.getItem(i), child));
    }
    set_new(node, "Value", items);
    return node;
}

// Every element but group lengths (PS3.18 F.2: they are not part of the JSON
// model), keyed "GGGGEEEE" (upper case).
json_t *dicomweb_dataset(DcmItem &item, const BulkPath &bulk)
{
    json_t *obj = must(json_object());
    for (unsigned long i = 0; i < item.card(); i++) {
        DcmElement *el = item.getElement(i);
        if (el->getTag().getElement() == 0x0000)
            continue;
        json_t *node = el->isLeaf()
                           ? dicomweb_leaf(*el, bulk)
                           : dicomweb_sequence(*static_cast<DcmSequenceOfItems *>(el), bulk);
        if (node)
            set_new(obj, format_tag("%04X%04X", el->getTag()).c_str(), node);
    }
    return obj;
}

} // namespace

std::string ts_orthanc_tag_name(const DcmTag &tag)
{
    return orthanc_tag_name(tag);
}

extern "C" json_t *ts_dicom_to_orthanc_json(const ts_dicom *d)
{
    return ts_dicom_to_orthanc_json_full(d, nullptr, 0);
}

extern "C" json_t *ts_dicom_to_orthanc_json_full(const ts_dicom *d, const uint32_t *tags, size_t n)
{
    return orthanc_dataset(dataset_of(d), true, FullLength{tags, n});
}

extern "C" json_t *ts_dicom_header_to_orthanc_json(const ts_dicom *d)
{
    DcmMetaInfo *meta = const_cast<DcmFileFormat &>(d->file).getMetaInfo();
    json_t *out = meta ? orthanc_dataset(*meta, false, FullLength{nullptr, 0}) : json_object();
    /* Orthanc leaves binary elements (FileMetaInformationVersion) out of /header */
    const char *key;
    json_t *tag;
    void *tmp;
    json_object_foreach_safe(out, tmp, key, tag)
    {
        const char *type = json_string_value(json_object_get(tag, "Type"));
        if (type && strcmp(type, "Null") == 0)
            json_object_del(out, key);
    }
    return out;
}

extern "C" json_t *ts_dicom_orthanc_simplify(const json_t *full)
{
    return simplify(full);
}

extern "C" json_t *ts_dicom_to_simplified_json(const ts_dicom *d)
{
    json_t *full = ts_dicom_to_orthanc_json(d);
    json_t *simple = simplify(full);
    json_decref(full);
    return simple;
}

extern "C" json_t *ts_dicom_to_dicomweb_json(const ts_dicom *d, const char *bulk_uri_prefix)
{
    BulkPath bulk{bulk_uri_prefix, bulk_uri_prefix ? bulk_uri_prefix : ""};
    return dicomweb_dataset(dataset_of(d), bulk);
}

extern "C" json_t *ts_dicom_to_dicom_json_inline(const ts_dicom *d)
{
    BulkPath bulk{nullptr, "", true};
    return dicomweb_dataset(dataset_of(d), bulk);
}

extern "C" json_t *ts_dicomweb_attribute(const char *vr, const char *value)
{
    DcmEVR evr = DcmVR(vr).getEVR();
    json_t *node = must(json_object());
    set_new(node, "vr", json_string(vr));
    if (!value || !*value)
        return node;
    // the index keeps binary numbers as text: read them as IS and DS read theirs
    DcmEVR as = evr;
    switch (evr) {
    case EVR_US:
    case EVR_SS:
    case EVR_UL:
    case EVR_SL:
    case EVR_SV:
    case EVR_UV:
        as = EVR_IS;
        break;
    case EVR_FL:
    case EVR_FD:
        as = EVR_DS;
        break;
    default:
        break;
    }
    set_new(node, "Value", dicomweb_strings(as, DcmTagKey(0xffff, 0xffff), value));
    return node;
}

// A main tag is stored as its /tags value (ConvertLeafElement) when that value
// is a string of at most 256 bytes; null values (binary, empty numbers), too
// long strings, sequences and absent tags are left out. Only top-level
// elements count.
extern "C" bool ts_dicom_is_main_tag(uint32_t tag)
{
    for (int level = TS_LEVEL_PATIENT; level <= TS_LEVEL_INSTANCE; level++) {
        const MainTagList list = main_tags_of((ts_level)level);
        for (size_t i = 0; i < list.count; i++)
            if (((uint32_t)list.tags[i].group << 16 | list.tags[i].element) == tag)
                return true;
    }
    return false;
}

extern "C" json_t *ts_dicom_main_tags(const ts_dicom *d, ts_level level)
{
    const MainTagList list = main_tags_of(level);
    DcmDataset &ds = dataset_of(d);
    json_t *out = must(json_object());
    for (size_t i = 0; i < list.count; i++) {
        const MainTag &tag = list.tags[i];
        DcmElement *el = nullptr;
        if (ds.findAndGetElement(DcmTagKey(tag.group, tag.element), el, OFFalse).bad() ||
            !el->isLeaf())
            continue;
        OrthancValue v = orthanc_leaf_value(*el);
        if (!v.null && v.text.size() <= ORTHANC_MAX_STRING_LENGTH)
            set_new(out, tag.name, utf8_string(v.text));
    }
    return out;
}

// A leaf element of an item or dataset as the main tags take it, or false.
static bool query_leaf(DcmItem &item, Uint16 group, Uint16 element, std::string &out)
{
    DcmElement *el = nullptr;
    if (item.findAndGetElement(DcmTagKey(group, element), el, OFFalse).bad() || !el ||
        !el->isLeaf())
        return false;
    OrthancValue v = orthanc_leaf_value(*el);
    if (v.null || v.text.empty() || v.text.size() > ORTHANC_MAX_STRING_LENGTH)
        return false;
    out = v.text;
    return true;
}

extern "C" json_t *ts_dicom_series_query_tags(const ts_dicom *d)
{
    DcmDataset &ds = dataset_of(d);
    json_t *out = must(json_object());
    std::string s;
    if (query_leaf(ds, 0x0040, 0x0244, s))
        set_new(out, "PerformedProcedureStepStartDate", utf8_string(s));
    if (query_leaf(ds, 0x0040, 0x0245, s))
        set_new(out, "PerformedProcedureStepStartTime", utf8_string(s));
    DcmSequenceOfItems *sq = nullptr;
    if (ds.findAndGetSequence(DcmTagKey(0x0040, 0x0275), sq, OFFalse).good() && sq &&
        sq->card() > 0) {
        // every item, also one without the two keys: it still is an item
        json_t *items = must(json_array());
        for (unsigned long i = 0; i < sq->card(); i++) {
            json_t *obj = must(json_object());
            if (query_leaf(*sq->getItem(i), 0x0040, 0x0009, s))
                set_new(obj, "00400009", utf8_string(s));
            if (query_leaf(*sq->getItem(i), 0x0040, 0x1001, s))
                set_new(obj, "00401001", utf8_string(s));
            json_array_append_new(items, obj);
        }
        set_new(out, "RequestAttributesSequence", items);
    }
    return out;
}
