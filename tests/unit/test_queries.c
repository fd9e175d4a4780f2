/* lib/domain/queries.c against a redis-server of its own (unit_redis.h; skipped when
 * redis-server is missing): a stored query reads back as the same JSON under a
 * fresh lower-case UUID; the list is sorted and holds only the queries still
 * kept (history and TTL); deleting forgets, and an unknown id is TS_ENOTFOUND
 * for a read and nothing for a delete; Redis down is TS_EIO, not "unknown". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/ids.h"
#include "domain/queries.h"
#include "unit_redis.h"

static int setup(void **state)
{
    ts_redis *r = NULL;
    ts_err err;
    if (ts_redis_open(redis_url, 2000, &r, &err))
        return -1;
    redisReply *rep;
    const char *flush[] = {"FLUSHALL"};
    if (ts_redis_run(r, 1, flush, 0, &rep, &err))
        return -1;
    freeReplyObject(rep);
    *state = r;
    return 0;
}

static int teardown(void **state)
{
    ts_redis_free(*state);
    return 0;
}

static json_t *a_query(int n)
{
    return json_pack("{s:s, s:s, s:{s:s}, s:[{s:i}]}", "Level", "Study", "Modality", "pacs",
                     "Query", "PatientName", "DOE*", "Answers", "n", n);
}

static void add(ts_redis *r, int n, int ttl_s, int history, char id[TS_QUERY_ID_LEN + 1])
{
    json_t *q = a_query(n);
    ts_err err;
    assert_int_equal(ts_queries_add(r, q, ttl_s, history, id, &err), 0);
    assert_int_equal(q->refcount, 1); /* not stolen */
    json_decref(q);
}

static char *listing(ts_redis *r)
{
    json_t *l = NULL;
    ts_err err;
    assert_int_equal(ts_queries_list(r, &l, &err), 0);
    char *s = json_dumps(l, JSON_COMPACT);
    json_decref(l);
    return s;
}

static void assert_unknown(ts_redis *r, const char *id)
{
    json_t *o = NULL;
    ts_err err;
    assert_int_equal(ts_queries_get(r, id, &o, &err), TS_ENOTFOUND);
    assert_int_equal(err.code, TS_ENOTFOUND);
    assert_null(o);
}

static void test_add_get(void **state)
{
    ts_redis *r = *state;
    char id1[TS_QUERY_ID_LEN + 1], id2[TS_QUERY_ID_LEN + 1];
    add(r, 1, 60, 10, id1);
    add(r, 2, 60, 10, id2);
    assert_int_equal(strlen(id1), TS_QUERY_ID_LEN);
    assert_true(ts_id_is_lower_uuid(id1));
    assert_string_not_equal(id1, id2);
    json_t *o = NULL;
    ts_err err;
    assert_int_equal(ts_queries_get(r, id2, &o, &err), 0);
    json_t *want = a_query(2);
    assert_true(json_equal(o, want));
    /* key order is kept */
    char *got_s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *want_s = json_dumps(want, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(got_s, want_s);
    free(got_s);
    free(want_s);
    json_decref(want);
    json_decref(o);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_list_sorted(void **state)
{
    ts_redis *r = *state;
    char *s = listing(r);
    assert_string_equal(s, "[]");
    free(s);
    char ids[5][TS_QUERY_ID_LEN + 1];
    for (int i = 0; i < 5; i++)
        add(r, i, 60, 10, ids[i]);
    qsort(ids, 5, sizeof(ids[0]), cmp_id);
    char want[512];
    snprintf(want, sizeof(want), "[\"%s\",\"%s\",\"%s\",\"%s\",\"%s\"]", ids[0], ids[1], ids[2],
             ids[3], ids[4]);
    s = listing(r);
    assert_string_equal(s, want);
    free(s);
}

static void test_unknown_ids(void **state)
{
    ts_redis *r = *state;
    assert_unknown(r, "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0");
    assert_unknown(r, "0F1E2D3C-4B5A-4978-8796-A5B4C3D2E1F0");
    assert_unknown(r, "../../etc");
    assert_unknown(r, "");
    ts_err err;
    assert_int_equal(ts_queries_delete(r, "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0", &err), 0);
    assert_int_equal(ts_queries_delete(r, "not an id", &err), 0);
}

static void test_delete(void **state)
{
    ts_redis *r = *state;
    char keep[TS_QUERY_ID_LEN + 1], gone[TS_QUERY_ID_LEN + 1];
    add(r, 1, 60, 10, keep);
    add(r, 2, 60, 10, gone);
    ts_err err;
    assert_int_equal(ts_queries_delete(r, gone, &err), 0);
    assert_unknown(r, gone);
    char want[64];
    snprintf(want, sizeof(want), "[\"%s\"]", keep);
    char *s = listing(r);
    assert_string_equal(s, want);
    free(s);
    assert_int_equal(ts_queries_delete(r, gone, &err), 0); /* again: nothing happens */
}

/* Beyond `history` queries, the oldest go. */
static void test_history(void **state)
{
    ts_redis *r = *state;
    char ids[4][TS_QUERY_ID_LEN + 1];
    for (int i = 0; i < 4; i++) {
        add(r, i, 60, 2, ids[i]);
        unit_sleep_ms(5); /* distinct creation times */
    }
    assert_unknown(r, ids[0]);
    assert_unknown(r, ids[1]);
    json_t *o = NULL;
    ts_err err;
    assert_int_equal(ts_queries_get(r, ids[3], &o, &err), 0);
    json_decref(o);
    const char *a = strcmp(ids[2], ids[3]) < 0 ? ids[2] : ids[3];
    const char *b = a == ids[2] ? ids[3] : ids[2];
    char want[128];
    snprintf(want, sizeof(want), "[\"%s\",\"%s\"]", a, b);
    char *s = listing(r);
    assert_string_equal(s, want);
    free(s);
}

/* An expired query is unknown and no longer listed. */
static void test_ttl(void **state)
{
    ts_redis *r = *state;
    char old[TS_QUERY_ID_LEN + 1], young[TS_QUERY_ID_LEN + 1];
    add(r, 1, 1, 10, old);
    add(r, 2, 60, 10, young);
    unit_sleep_ms(1200);
    assert_unknown(r, old);
    char want[64];
    snprintf(want, sizeof(want), "[\"%s\"]", young);
    char *s = listing(r);
    assert_string_equal(s, want);
    free(s);
}

/* Redis down: every call fails with TS_EIO (a REST process answers 5xx, not
 * 404); after the restart the same connection works again. */
static void test_redis_down(void **state)
{
    ts_redis *r = *state;
    char id[TS_QUERY_ID_LEN + 1];
    add(r, 1, 60, 10, id);
    unit_redis_kill();
    json_t *q = a_query(1), *o = NULL;
    ts_err err;
    assert_int_equal(ts_queries_add(r, q, 60, 10, id, &err), TS_EIO);
    assert_int_equal(ts_queries_get(r, id, &o, &err), TS_EIO);
    assert_null(o);
    assert_int_equal(ts_queries_list(r, &o, &err), TS_EIO);
    assert_null(o);
    assert_int_equal(ts_queries_delete(r, id, &err), TS_EIO);
    assert_int_equal(unit_redis_run(), 0);
    assert_int_equal(ts_queries_add(r, q, 60, 10, id, &err), 0);
    assert_int_equal(ts_queries_get(r, id, &o, &err), 0);
    json_decref(o);
    json_decref(q);
}

int main(void)
{
    if (!unit_redis_available())
        return 77;
    signal(SIGPIPE, SIG_IGN); /* as every service does (lib/base/service.c) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_sorted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, unit_redis_start, unit_redis_stop);
}
