"""DICOMweb answers as XML (PS3.18 8.7.3.4, 10.4.3; the Native DICOM Model of PS3.19
A.1): QIDO-RS results and WADO-RS metadata as multipart/related;
type="application/dicom+xml", one part per data set, and the STOW-RS response as one
application/dicom+xml document (PS3.18 10.5.3). Checked three ways: each XML part
read back into the DICOM JSON model equals Tessera's own JSON answer for the same
request (nothing lost or changed in the conversion), the same attributes and values as
Orthanc 1.10.1's DICOMweb plugin answers in XML, and values with XML's special
characters survive."""
import json
import re
import xml.etree.ElementTree as ET

import pydicom

from conftest import PYDICOM_FILES
from orthanc import http
from test_dicomweb import (STOW_TYPE, dw, failed, get, multipart, multipart_body,  # noqa: F401
                           new_instances, referenced, series_uid, sop_uid, study_uid)

XML = 'multipart/related; type="application/dicom+xml"'
NS = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"
NUMERIC = {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"}
PN_PARTS = ["FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix"]


def number(text, vr):
    if text is None:
        return None
    return int(text) if vr in ("IS", "US", "UL", "SS", "SL", "SV", "UV") else float(text)


def attributes(parent):
    """A NativeDicomModel element's attributes as the DICOM JSON model."""
    out = {}
    for a in parent.findall(f"{NS}DicomAttribute"):
        vr = a.get("vr")
        j = {"vr": vr}
        bulk, inline = a.find(f"{NS}BulkData"), a.find(f"{NS}InlineBinary")
        if bulk is not None:
            j["BulkDataURI"] = bulk.get("uri")
        elif inline is not None:
            j["InlineBinary"] = inline.text
        elif vr == "SQ":
            items = sorted(a.findall(f"{NS}Item"), key=lambda e: int(e.get("number")))
            if items:
                j["Value"] = [attributes(i) for i in items]
        elif vr == "PN":
            names = sorted(a.findall(f"{NS}PersonName"), key=lambda e: int(e.get("number")))
            vals = []
            for n in names:
                v = {}
                for group in ("Alphabetic", "Ideographic", "Phonetic"):
                    g = n.find(f"{NS}{group}")
                    if g is not None:
                        parts = [(g.find(f"{NS}{p}").text or "") if g.find(f"{NS}{p}") is not None
                                 else "" for p in PN_PARTS]
                        v[group] = "^".join(parts).rstrip("^")
                vals.append(v)
            if vals:
                j["Value"] = vals
        else:
            vals = sorted(a.findall(f"{NS}Value"), key=lambda e: int(e.get("number")))
            if vals:
                j["Value"] = [number(v.text, vr) if vr in NUMERIC else (v.text or "")
                              for v in vals]
        out[a.get("tag")] = j
    return out


def xml_parts(body, headers):
    """The XML parts of a multipart answer, each parsed: [(root element, model)]."""
    ct = headers["Content-Type"]
    assert ct.startswith('multipart/related; type="application/dicom+xml"'), ct
    out = []
    for part_headers, data in multipart(body, ct):
        assert part_headers["content-type"] == "application/dicom+xml", part_headers
        root = ET.fromstring(data)
        assert root.tag == f"{NS}NativeDicomModel", root.tag
        out.append((root, attributes(root)))
    return out


def normalise(model):
    """JSON model values compared as the XML carries them: numbers as numbers,
    empty Values dropped, PN trailing carets removed."""
    out = {}
    for tag, a in model.items():
        a = dict(a)
        if a.get("vr") == "SQ" and "Value" in a:
            a["Value"] = [normalise(i) for i in a["Value"]]
        elif a.get("vr") == "PN" and "Value" in a:
            a["Value"] = [{k: v.rstrip("^") for k, v in n.items()} for n in a["Value"]]
        elif a.get("vr") in NUMERIC and "Value" in a:
            a["Value"] = [number(str(v), a["vr"]) if v is not None else None for v in a["Value"]]
        elif "Value" in a:
            a["Value"] = ["" if v is None else v for v in a["Value"]]
        if a.get("Value") == []:
            del a["Value"]
        out[tag] = a
    return out


def test_qido_as_xml_carries_the_json_answer(dw):
    for path in ("studies", f"studies/{study_uid('1')}/series", "instances?Modality=MR"):
        status, jbody, _ = get(dw.rest.url, f"/dicom-web/{path}", "application/dicom+json")
        assert status == 200
        status, xbody, headers = get(dw.rest.url, f"/dicom-web/{path}", XML)
        assert status == 200, xbody
        parts = xml_parts(xbody, headers)
        assert [normalise(j) for j in json.loads(jbody)] == [m for _, m in parts], path


def test_metadata_as_xml_carries_the_json_answer_and_bulk_data_uris(dw):
    path = f"/dicom-web/studies/{study_uid('1')}/series/{series_uid('1.1')}/metadata"
    jmeta = json.loads(get(dw.rest.url, path, "application/dicom+json")[1])
    status, xbody, headers = get(dw.rest.url, path, XML)
    assert status == 200, xbody
    parts = xml_parts(xbody, headers)
    assert len(parts) == 2
    assert [normalise(j) for j in jmeta] == [m for _, m in parts]
    pixel = parts[0][0].find(f"{NS}DicomAttribute[@tag='7FE00010']/{NS}BulkData")
    assert pixel is not None and pixel.get("uri").endswith("/bulk/7fe00010")
    # PS3.19: keyword attributes from the data dictionary
    name = parts[0][0].find(f"{NS}DicomAttribute[@tag='00100010']")
    assert name.get("keyword") == "PatientName" and name.get("vr") == "PN"
    assert name.find(f"{NS}PersonName/{NS}Alphabetic/{NS}FamilyName").text == "DOE"


def close_numbers(m):
    """Numbers to 6 significant digits: Orthanc's plugin writes DS through a float
    (-75.6999969 for the file's "-75.699997") and FL with 9 digits, Tessera the DS
    text as it is in the file (PS3.19: the value) and FL as the float's shortest
    double text; the same values, written differently."""
    out = {}
    for k, v in m.items():
        v = dict(v)
        if v.get("vr") in NUMERIC and "Value" in v:
            v["Value"] = [float(f"{x:.6g}") if isinstance(x, float) else x for x in v["Value"]]
        elif v.get("vr") == "SQ" and "Value" in v:
            v["Value"] = [close_numbers(i) for i in v["Value"]]
        out[k] = v
    return out


def test_xml_as_orthanc_plugin(dw):
    """The same attributes, VRs and values as Orthanc 1.10.1's plugin writes in XML
    (bulk data URIs aside: each server names its own; numbers: close_numbers)."""
    path = f"/dicom-web/studies/{study_uid('1')}/series/{series_uid('1.1')}/instances/" \
           f"{sop_uid('1.1', 1)}/metadata"
    status, body, headers = get(dw.rest.url, path, XML)
    assert status == 200, body
    mine = xml_parts(body, headers)
    status, obody, oheaders = get(dw.o.url, path, XML)
    assert status == 200, obody
    theirs = xml_parts(obody, oheaders)

    def strip(m):
        return {k: ({"vr": v["vr"], "BulkDataURI": "..."} if "BulkDataURI" in v else v)
                for k, v in m.items()}
    assert close_numbers(strip(mine[0][1])) == close_numbers(strip(theirs[0][1]))
    mine_kw = {a.get("tag"): a.get("keyword") for a in mine[0][0]}
    theirs_kw = {a.get("tag"): a.get("keyword") for a in theirs[0][0]}
    assert mine_kw == theirs_kw


def test_accept_order_chooses_the_format(dw):
    url = f"/dicom-web/studies/{study_uid('2')}/metadata"
    status, _, headers = get(dw.rest.url, url, f"application/dicom+json, {XML}")
    assert status == 200 and headers["Content-Type"] == "application/dicom+json"
    status, _, headers = get(dw.rest.url, url, f"{XML}, application/dicom+json")
    assert status == 200 and headers["Content-Type"].startswith("multipart/related")
    status, body, _ = get(dw.rest.url, url, "text/html")
    assert status == 406 and "application/dicom+xml" in json.loads(body)["Details"]


def test_xml_special_characters_round_trip(dw, tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "2.25.4712.1", "2.25.4712.2"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25.4712.3"
    ds.StudyDescription = 'A<B & "C" > \'D\''
    ds.PatientName = "O'NEIL&CO^<ANN>"
    p = tmp_path / "x.dcm"
    ds.save_as(p)
    assert http(dw.rest.url, "POST", "/instances", p.read_bytes())[0] == 200
    status, body, headers = get(dw.rest.url, "/dicom-web/studies?StudyInstanceUID=2.25.4712.1"
                                "&includefield=StudyDescription", XML)
    assert status == 200, body
    assert re.search(rb"A&lt;B &amp;", body)  # escaped, not raw
    (root, model), = xml_parts(body, headers)
    assert model["00081030"]["Value"] == ['A<B & "C" > \'D\'']
    assert model["00100010"]["Value"] == [{"Alphabetic": "O'NEIL&CO^<ANN>"}]


# ---- STOW-RS answers in XML (PS3.18 10.5.3: the Store Instances Response as DICOM JSON or
# as one application/dicom+xml document) ---------------------------------------------------

def stow_as(url, path, body, accept):
    return http(url, "POST", f"/dicom-web/{path}", body,
                {"Content-Type": STOW_TYPE, "Accept": accept})


def xml_document(body, headers):
    """A single NativeDicomModel document (not multipart): (root element, model)."""
    assert headers["Content-Type"] == "application/dicom+xml", headers
    root = ET.fromstring(body)
    assert root.tag == f"{NS}NativeDicomModel", root.tag
    return root, attributes(root)


def test_stow_as_xml_carries_the_json_answer(dw, tmp_path):
    """2 good parts, one that is not DICOM, one of another study than the URL's: 202 both
    times; the XML document read back is the JSON answer of the same request (sent again,
    the stored instances count as stored, so the answers are the same)."""
    study = study_uid("30")
    good = new_instances(tmp_path, study, 2)
    other = new_instances(tmp_path, study_uid("31"), 1)[0]
    body = multipart_body([("application/dicom", good[0].read_bytes()),
                           ("application/dicom", b"not DICOM" * 40),
                           ("application/dicom", other.read_bytes()),
                           ("application/dicom", good[1].read_bytes())])
    status, xbody, headers = stow_as(dw.rest.url, f"studies/{study}", body,
                                     "application/dicom+xml")
    assert status == 202, xbody
    root, model = xml_document(xbody, headers)
    status, jbody, jheaders = stow_as(dw.rest.url, f"studies/{study}", body,
                                      "application/dicom+json")
    assert status == 202 and jheaders["Content-Type"] == "application/dicom+json"
    assert normalise(json.loads(jbody)) == model
    assert referenced(model) == [f"{study}.1.1", f"{study}.1.2"]
    assert failed(model) == [(None, 0xC000), (f"{study_uid('31')}.1.1", 0x0110)]
    # PS3.19: the keywords of the response's attributes, items numbered from 1
    kw = {a.get("tag"): a.get("keyword") for a in root}
    assert kw == {"00081190": "RetrieveURL", "00081198": "FailedSOPSequence",
                  "00081199": "ReferencedSOPSequence"}
    items = root.findall(f"{NS}DicomAttribute[@tag='00081199']/{NS}Item")
    assert [i.get("number") for i in items] == ["1", "2"]
    reason = root.find(f"{NS}DicomAttribute[@tag='00081198']/{NS}Item[@number='2']/"
                       f"{NS}DicomAttribute[@tag='00081197']")
    assert reason.get("vr") == "US" and reason.get("keyword") == "FailureReason"
    assert reason.find(f"{NS}Value[@number='1']").text == str(0x0110)


def test_stow_as_xml_all_stored_and_none_stored(dw, tmp_path):
    study = study_uid("32")
    files = new_instances(tmp_path, study, 2)
    body = multipart_body([("application/dicom", f.read_bytes()) for f in files])
    status, xbody, headers = stow_as(dw.rest.url, "studies", body, "application/dicom+xml")
    assert status == 200, xbody
    root, model = xml_document(xbody, headers)
    assert referenced(model) == [f"{study}.1.1", f"{study}.1.2"] and "00081198" not in model
    assert model["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{study}")
    # every part refused: 409, still the XML response
    status, xbody, headers = stow_as(dw.rest.url, f"studies/{study_uid('1')}", body,
                                     "application/dicom+xml")
    assert status == 409
    assert referenced(xml_document(xbody, headers)[1]) == []


def test_stow_accept_quality_and_406(dw, tmp_path):
    """The range of the higher q wins whatever the order (RFC 9110 12.5.1), the first one
    on a tie; an Accept that allows neither JSON nor XML is 406 before anything is
    stored. multipart/related; type="application/dicom+xml" is not a STOW response's type
    (PS3.18 10.5.3: one data set), so it is 406 too."""
    study = study_uid("33")
    f = new_instances(tmp_path, study, 1)[0]
    body = multipart_body([("application/dicom", f.read_bytes())])
    for accept, expected in [
            ("application/dicom+json;q=0.5, application/dicom+xml", "application/dicom+xml"),
            ("application/dicom+xml;q=0.2, application/dicom+json;q=0.9",
             "application/dicom+json"),
            ("application/dicom+xml, application/dicom+json", "application/dicom+xml"),
            ("application/dicom+json, application/dicom+xml", "application/dicom+json"),
            ("application/dicom+xml, */*;q=0.1", "application/dicom+xml")]:
        status, rbody, headers = stow_as(dw.rest.url, "studies", body, accept)
        assert status == 200 and headers["Content-Type"] == expected, (accept, headers)
    for accept in ("text/html", 'multipart/related; type="application/dicom+xml"',
                   "application/dicom+xml;q=0"):
        study = study_uid("34")
        f = new_instances(tmp_path, study, 1)[0]
        status, rbody, _ = stow_as(dw.rest.url, "studies",
                                   multipart_body([("application/dicom", f.read_bytes())]),
                                   accept)
        assert status == 406, (accept, rbody)
        assert "application/dicom+xml" in json.loads(rbody)["Details"]
        assert dw.sql("SELECT count(*) FROM studies WHERE study_instance_uid = %s",
                      (study,))[0][0] == 0
        assert dw.temp_files() == []


def test_qido_accept_quality(dw):
    """QIDO and metadata choose by q as well (the order only breaks ties)."""
    url = f"/dicom-web/studies/{study_uid('2')}/metadata"
    status, _, headers = get(dw.rest.url, url, f"application/dicom+json;q=0.4, {XML}")
    assert status == 200 and headers["Content-Type"].startswith("multipart/related")
    status, _, headers = get(dw.rest.url, url, f"{XML};q=0.4, application/dicom+json")
    assert status == 200 and headers["Content-Type"] == "application/dicom+json"


def test_stow_xml_as_orthanc_plugin(dw, tmp_path):
    """Orthanc 1.10.1's plugin answers STOW-RS in XML too: the same attributes, VRs,
    keywords and stored instances (RetrieveURLs aside: each server names its own). The
    plugin adds an empty FailedSOPSequence when nothing failed (PS3.18 10.5.3 asks
    for it when some failed: Tessera leaves it out) and SpecificCharacterSet
    ISO_IR 100 (the document is UTF-8 whatever that says: Tessera writes none)."""
    study = study_uid("35")
    files = new_instances(tmp_path, study, 2)
    body = multipart_body([("application/dicom", f.read_bytes()) for f in files])
    mine = stow_as(dw.rest.url, "studies", body, "application/dicom+xml")
    theirs = stow_as(dw.o.url, "studies", body, "application/dicom+xml")
    assert mine[0] == theirs[0] == 200, (mine, theirs)
    (mroot, mmodel), (troot, tmodel) = xml_document(*mine[1:]), xml_document(*theirs[1:])

    def strip(m):
        out = {}
        for tag, a in m.items():
            a = dict(a)
            if a["vr"] == "UR":
                a["Value"] = ["..."]
            if a["vr"] == "SQ" and "Value" in a:
                a["Value"] = [strip(i) for i in a["Value"]]
            out[tag] = a
        return out
    assert tmodel.pop("00081198") == {"vr": "SQ"}
    assert tmodel.pop("00080005") == {"vr": "CS", "Value": ["ISO_IR 100"]}
    assert strip(mmodel) == strip(tmodel)
    assert referenced(mmodel) == [f"{study}.1.1", f"{study}.1.2"]
    assert {a.get("tag"): a.get("keyword") for a in mroot} == \
        {a.get("tag"): a.get("keyword") for a in troot if a.get("tag") in tmodel}
