"""Paging through /patients, /studies, ... with Orthanc's `since` (an offset) and
`limit` (issue 20). Each rest process remembers where the pages it answered ended
(lib/base/offset_cursors.h) and answers the next page with an index range from
there instead of skipping `since` rows, which is what makes paging through ten
million instances linear. The answers must be Orthanc's: every page is the slice
[since, since + limit) of the whole list in id order, also after a removal (which
moves the later offsets), after new resources, and through two rest replicas."""
import pytest

from conftest import storescu
from test_deleter import make_study, rest_json

PATIENTS = 23


@pytest.fixture
def stack(cluster, tmp_path):
    ing = cluster.start_ingest()
    rests = [cluster.start_rest(ing), cluster.start_rest(ing)]
    files = []
    for p in range(PATIENTS):
        files += make_study(tmp_path / "gen", 100 + p, f"PAGING-{p:02d}", [1])
    assert storescu(ing, files)[0] == 0
    return cluster, ing, rests


def pages(rest, level, limit, expand=False):
    got, since = [], 0
    while True:
        status, page = rest_json(rest, "GET", f"/{level}?since={since}&limit={limit}"
                                 + ("&expand" if expand else ""))
        assert status == 200
        got += [p["ID"] for p in page] if expand else page
        if len(page) < limit:
            return got
        since += limit


def test_pages_are_slices_of_the_whole_list(stack):
    cluster, _, (rest, _) = stack
    whole = rest_json(rest, "GET", "/patients")[1]
    assert len(whole) == PATIENTS
    in_id_order = [r[0] for r in cluster.sql(
        "SELECT public_id FROM resources WHERE level = 0 ORDER BY id")]
    assert whole == in_id_order
    for limit in (1, 4, 5, 23, 50):
        assert pages(rest, "patients", limit) == whole
    assert pages(rest, "patients", 5, expand=True) == whole
    assert pages(rest, "instances", 7) == rest_json(rest, "GET", "/instances")[1]
    # any offset, not only where a page ended
    for since in (0, 3, 9, 22, 23, 40):
        assert rest_json(rest, "GET", f"/patients?since={since}&limit=4")[1] == whole[since:since + 4]


def test_the_next_page_comes_from_where_the_last_one_ended(stack):
    """An id below the page's end that appears afterwards (a transaction that took
    its id earlier and committed later) is not counted again: the next page
    starts after the last id given, not at an offset that the newcomer shifted.
    Made here by inserting a row with id 0 in SQL."""
    cluster, _, (rest, _) = stack
    whole = rest_json(rest, "GET", "/patients")[1]
    assert rest_json(rest, "GET", "/patients?since=0&limit=5")[1] == whole[0:5]
    assert rest_json(rest, "GET", "/patients?since=5&limit=5")[1] == whole[5:10]
    cluster.sql("INSERT INTO resources (id, level, public_id) VALUES (0, 0, 'late-patient')")
    assert rest_json(rest, "GET", "/patients?since=10&limit=5")[1] == whole[10:15]
    # a process without a cursor counts from the start (Orthanc's offset): shifted by one
    other = stack[2][1]
    assert rest_json(other, "GET", "/patients?since=10&limit=5")[1] == whole[9:14]


def test_a_removal_moves_the_later_offsets_as_in_orthanc(stack):
    cluster, _, (rest, _) = stack
    whole = rest_json(rest, "GET", "/patients")[1]
    assert rest_json(rest, "GET", "/patients?since=0&limit=5")[1] == whole[0:5]
    assert rest_json(rest, "GET", "/patients?since=5&limit=5")[1] == whole[5:10]
    status, _ = rest_json(rest, "DELETE", f"/patients/{whole[2]}")
    assert status == 200
    after = whole[:2] + whole[3:]
    # the cursor at offset 10 was taken before the removal: not used
    assert rest_json(rest, "GET", "/patients?since=10&limit=5")[1] == after[10:15]
    assert pages(rest, "patients", 5) == after
    # removing an instance does not move patient offsets
    inst = rest_json(rest, "GET", f"/patients/{after[5]}/instances")[1][0]["ID"]
    assert rest_json(rest, "DELETE", f"/instances/{inst}")[0] == 200
    after = after[:5] + after[6:]  # its patient had one instance: removed with it
    assert pages(rest, "patients", 4) == after


def test_new_resources_are_found_at_the_end(stack, tmp_path):
    cluster, ing, (rest, _) = stack
    whole = rest_json(rest, "GET", "/patients")[1]
    assert pages(rest, "patients", 10) == whole
    assert storescu(ing, make_study(tmp_path / "new", 300, "PAGING-NEW", [1]))[0] == 0
    now = rest_json(rest, "GET", "/patients")[1]
    assert now[:-1] == whole and len(now) == PATIENTS + 1
    assert rest_json(rest, "GET", f"/patients?since={PATIENTS - 3}&limit=10")[1] == now[-4:]
    assert pages(rest, "patients", 10) == now


def test_two_replicas_taking_turns_give_the_same_pages(stack):
    _, _, rests = stack
    whole = rest_json(rests[0], "GET", "/patients")[1]
    got, since, turn = [], 0, 0
    while since < PATIENTS:
        got += rest_json(rests[turn % 2], "GET", f"/patients?since={since}&limit=3")[1]
        since, turn = since + 3, turn + 1
    assert got == whole
