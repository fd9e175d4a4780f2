"""Labels, as Orthanc 1.12 has them. Debian 12's Orthanc 1.10.1 has no labels, so
there is no live reference to compare with: these tests follow Orthanc 1.12's
documented REST API (https://orthanc.uclouvain.be/api/, "Labels") and JSON:
PUT/DELETE/GET /{level}/{id}/labels/{label} answer an empty text/plain 200,
GET /{level}/{id}/labels a sorted JSON list, /tools/labels every label in use,
"Labels" in each resource's JSON, and /tools/find's "Labels" with
"LabelsConstraint" All (the default), Any or None. A label is 1 to 64 characters
of [A-Za-z0-9_-] (Orthanc 1.12's ServerToolbox::IsValidLabel); another name is
refused with Orthanc's ParameterOutOfRange (400) and nothing is changed."""
import json

import pytest

from conftest import ROOT
from orthanc import http

DATA = ROOT / "tests/data/dicom"
FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    from conftest import Cluster
    base = tmp_path_factory.mktemp("labels")
    base.chmod(0o755)
    c = Cluster(postgres, base)
    try:
        ing = c.start_ingest()
        q = c.start_query()
        rest = c.start_rest(ing, TESSERA_QUERY_BUS=q.bus)
        ids = []
        for name in FILES:
            s, body, _ = http(rest.url, "POST", "/instances", (DATA / name).read_bytes())
            assert s == 200, body
            ids.append(json.loads(body))
        yield c, rest.url, ids
    finally:
        c.stop()


def get(url, path):
    s, body, h = http(url, "GET", path)
    return s, (json.loads(body) if body and "json" in h.get("Content-Type", "") else body)


def find(url, body):
    s, data, _ = http(url, "POST", "/tools/find", json.dumps(body).encode())
    return s, json.loads(data) if data else None


def test_put_get_list_delete(server):
    _, url, ids = server
    study = ids[0]["ParentStudy"]
    assert get(url, f"/studies/{study}/labels") == (200, [])
    s, body, h = http(url, "PUT", f"/studies/{study}/labels/groupB")
    assert (s, body) == (200, b"") and h["Content-Type"].startswith("text/plain")
    assert http(url, "PUT", f"/studies/{study}/labels/Group_A-1")[0] == 200
    assert http(url, "PUT", f"/studies/{study}/labels/groupB")[0] == 200  # twice: no error
    # sorted bytewise, as Orthanc's std::set: upper case first
    assert get(url, f"/studies/{study}/labels") == (200, ["Group_A-1", "groupB"])
    assert get(url, f"/studies/{study}")[1]["Labels"] == ["Group_A-1", "groupB"]
    assert http(url, "GET", f"/studies/{study}/labels/groupB")[:2] == (200, b"")
    # a label the resource does not carry: Orthanc 1.12 answers nothing, 404
    assert http(url, "GET", f"/studies/{study}/labels/other")[0] == 404
    # labels belong to the resource they are put on, not to its children
    series = ids[0]["ParentSeries"]
    assert get(url, f"/series/{series}")[1]["Labels"] == []
    assert get(url, f"/instances/{ids[0]['ID']}")[1]["Labels"] == []
    assert http(url, "DELETE", f"/studies/{study}/labels/groupB")[:2] == (200, b"")
    assert http(url, "DELETE", f"/studies/{study}/labels/groupB")[0] == 200  # absent: no error
    assert get(url, f"/studies/{study}/labels") == (200, ["Group_A-1"])
    assert http(url, "DELETE", f"/studies/{study}/labels/Group_A-1")[0] == 200


@pytest.mark.parametrize("level,key", [("patients", "ParentPatient"), ("series", "ParentSeries"),
                                       ("instances", "ID")])
def test_every_level(server, level, key):
    _, url, ids = server
    rid = ids[1][key]
    assert http(url, "PUT", f"/{level}/{rid}/labels/lvl")[0] == 200
    assert get(url, f"/{level}/{rid}")[1]["Labels"] == ["lvl"]
    assert get(url, f"/{level}/{rid}/labels") == (200, ["lvl"])
    assert http(url, "DELETE", f"/{level}/{rid}/labels/lvl")[0] == 200
    assert get(url, f"/{level}/{rid}")[1]["Labels"] == []


@pytest.mark.parametrize("label", ["a b", "a.b", "x" * 65, "%C3%A9t%C3%A9", "a:b", "*"])
def test_invalid_label_refused(server, label):
    """A name Orthanc 1.12 refuses: 400 ParameterOutOfRange, nothing stored."""
    c, url, ids = server
    study = ids[0]["ParentStudy"]
    s, body, _ = http(url, "PUT", f"/studies/{study}/labels/{label.replace(' ', '%20')}")
    assert s == 400, body
    err = json.loads(body)
    assert err["OrthancError"] == "Parameter out of range" and err["OrthancStatus"] == 3
    assert c.sql("SELECT count(*) FROM labels")[0][0] == 0
    s, err = find(url, {"Level": "Study", "Query": {}, "Labels": [label]})
    assert s == 400 and err["OrthancStatus"] == 3, err


def test_64_characters_is_the_limit(server):
    _, url, ids = server
    study = ids[0]["ParentStudy"]
    label = "L" * 64
    assert http(url, "PUT", f"/studies/{study}/labels/{label}")[0] == 200
    assert label in get(url, f"/studies/{study}/labels")[1]
    assert http(url, "DELETE", f"/studies/{study}/labels/{label}")[0] == 200


def test_unknown_resource(server):
    _, url, _ = server
    zero = "00000000-00000000-00000000-00000000-00000000"
    for method in ("PUT", "DELETE", "GET"):
        s, body, _ = http(url, method, f"/studies/{zero}/labels/x")
        assert s == 404, (method, body)
        if body:
            assert json.loads(body)["OrthancError"] == "Unknown resource"
    assert http(url, "GET", f"/studies/{zero}/labels")[0] == 404


def test_tools_labels_and_find(server):
    c, url, ids = server
    studies = [i["ParentStudy"] for i in ids]
    a, b, none = studies
    for sid, labels in ((a, ["red", "blue"]), (b, ["blue"])):
        for l in labels:
            assert http(url, "PUT", f"/studies/{sid}/labels/{l}")[0] == 200
    assert http(url, "PUT", f"/series/{ids[2]['ParentSeries']}/labels/green")[0] == 200
    assert get(url, "/tools/labels") == (200, ["blue", "green", "red"])

    def ids_of(body):
        s, res = find(url, body)
        assert s == 200, res
        return set(res)

    q = {"Level": "Study", "Query": {}}
    assert ids_of({**q, "Labels": ["blue"]}) == {a, b}
    assert ids_of({**q, "Labels": ["blue", "red"]}) == {a}  # All is the default
    assert ids_of({**q, "Labels": ["blue", "red"], "LabelsConstraint": "All"}) == {a}
    assert ids_of({**q, "Labels": ["red", "nothing"], "LabelsConstraint": "Any"}) == {a}
    assert ids_of({**q, "Labels": ["red"], "LabelsConstraint": "None"}) == {b, none}
    assert ids_of({**q, "Labels": []}) == {a, b, none}
    # a label on a series is matched at the series level, not at the study's
    assert ids_of({**q, "Labels": ["green"]}) == set()
    assert ids_of({"Level": "Series", "Query": {}, "Labels": ["green"]}) == {ids[2]["ParentSeries"]}
    # together with tags
    mod = get(url, f"/series/{ids[0]['ParentSeries']}")[1]["MainDicomTags"]["Modality"]
    assert ids_of({"Level": "Study", "Query": {"ModalitiesInStudy": mod},
                   "Labels": ["blue"]}) == {a}
    # expanded: the labels in each resource
    s, res = find(url, {**q, "Labels": ["red"], "Expand": True})
    assert s == 200 and [r["Labels"] for r in res] == [["blue", "red"]]
    s, res = find(url, {**q, "Labels": ["red"], "LabelsConstraint": "Some"})
    assert s == 400
    s, res = find(url, {**q, "Labels": "red"})
    assert s == 400
    # a deleted study's labels are gone from /tools/labels at once
    assert http(url, "DELETE", f"/series/{ids[2]['ParentSeries']}")[0] == 200
    assert get(url, "/tools/labels") == (200, ["blue", "red"])


def test_resources_row_follows_the_labels(cluster):
    """0048: each resource's labels are also on its resources row (NULL without
    any), kept by a trigger on labels; the study-level filter of a label-scoped
    caller reads them there. Concurrent PUTs and DELETEs of one study's labels
    all count, a deleted study's rows go with it, and the migration's backfill gives the
    column back from labels. The check compares the column with the labels table
    for every resource, so it fails on any row out of step."""
    import threading
    ing = cluster.start_ingest()
    rest = cluster.start_rest(ing)
    studies = []
    for name in FILES:
        s, body, _ = http(rest.url, "POST", "/instances", (DATA / name).read_bytes())
        assert s == 200, body
        studies.append(json.loads(body)["ParentStudy"])
    out_of_step = (
        "SELECT r.public_id, r.labels, l.labels FROM resources r"
        " LEFT JOIN (SELECT resource_id, array_agg(label ORDER BY label) AS labels"
        "            FROM labels GROUP BY resource_id) l ON l.resource_id = r.id"
        " WHERE r.labels IS DISTINCT FROM l.labels"
        "   AND (r.labels IS NULL OR l.labels IS NULL"
        "        OR NOT (r.labels @> l.labels AND l.labels @> r.labels)"
        "        OR cardinality(r.labels) <> cardinality(l.labels))")

    def each(method, labels):
        errors = []

        def one(label):
            s = http(rest.url, method, f"/studies/{studies[0]}/labels/{label}")[0]
            if s != 200:
                errors.append((label, s))
        threads = [threading.Thread(target=one, args=(lb,)) for lb in labels]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

    names = [f"c{i}" for i in range(12)]
    each("PUT", names)
    assert get(rest.url, f"/studies/{studies[0]}/labels") == (200, sorted(names))
    assert cluster.sql(out_of_step) == []
    assert cluster.sql("SELECT cardinality(labels) FROM resources WHERE public_id = %s",
                       (studies[0],)) == [(12,)]
    each("DELETE", names[:8])
    assert cluster.sql(out_of_step) == []
    assert cluster.sql("SELECT labels FROM resources WHERE public_id = %s",
                       (studies[0],))[0][0] is not None
    each("DELETE", names[8:])
    assert cluster.sql("SELECT labels FROM resources WHERE public_id = %s",
                       (studies[0],)) == [(None,)]
    # a series' label is on the series' row; a deleted study's labels go with it
    series = json.loads(http(rest.url, "GET", f"/studies/{studies[1]}")[1])["Series"][0]
    assert http(rest.url, "PUT", f"/series/{series}/labels/onseries")[0] == 200
    assert http(rest.url, "PUT", f"/studies/{studies[1]}/labels/gone")[0] == 200
    assert http(rest.url, "PUT", f"/studies/{studies[2]}/labels/kept")[0] == 200
    assert cluster.sql("SELECT labels FROM resources WHERE public_id = %s", (series,)) == \
        [(["onseries"],)]
    assert http(rest.url, "DELETE", f"/studies/{studies[1]}")[0] == 200
    # (its labels rows go later, with the deleter's purge: reads reach labels
    # through a live resource, 0019)
    assert cluster.sql("SELECT count(*) FROM resources WHERE labels && '{gone,onseries}'") == [(0,)]
    assert cluster.sql(out_of_step) == []
    # the migration's backfill, run again on an emptied column, gives it back
    cluster.sql("UPDATE resources SET labels = NULL")
    assert cluster.sql(out_of_step) != []
    migration = (ROOT / "db/migrations/0048_resource_labels.sql").read_text()
    cluster.sql(migration[migration.index("UPDATE resources r"):migration.index("CREATE INDEX")])
    assert cluster.sql(out_of_step) == []
    assert cluster.sql("SELECT labels FROM resources WHERE public_id = %s", (studies[2],)) == \
        [(["kept"],)]
