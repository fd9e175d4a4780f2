/* Keyset cursors behind offset paging (lib/base/offset_cursors.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/offset_cursors.h"

static int reset(void **state)
{
    (void)state;
    ts_offset_cursor_reset();
    return 0;
}

static void put(int level, long long position, long long after_id, long long removals)
{
    ts_offset_cursor c = {position, after_id, removals};
    ts_offset_cursor_put(level, &c);
}

static void finds_the_nearest_position_at_or_below(void **state)
{
    (void)state;
    ts_offset_cursor c;
    assert_false(ts_offset_cursor_find(0, 100, &c));
    put(0, 100, 1000, 0);
    put(0, 200, 2000, 0);
    put(0, 300, 3000, 0);
    assert_true(ts_offset_cursor_find(0, 250, &c));
    assert_int_equal(c.position, 200);
    assert_int_equal(c.after_id, 2000);
    assert_true(ts_offset_cursor_find(0, 300, &c));
    assert_int_equal(c.after_id, 3000);
    assert_false(ts_offset_cursor_find(0, 99, &c));
    assert_false(ts_offset_cursor_find(0, 0, &c));
    /* levels are separate */
    assert_false(ts_offset_cursor_find(1, 250, &c));
    assert_false(ts_offset_cursor_find(7, 250, &c));
}

static void a_position_taken_again_replaces_its_entry(void **state)
{
    (void)state;
    ts_offset_cursor c;
    put(2, 100, 1000, 0);
    put(2, 100, 1500, 0);
    assert_true(ts_offset_cursor_find(2, 100, &c));
    assert_int_equal(c.after_id, 1500);
}

static void a_new_removal_count_forgets_the_older_entries(void **state)
{
    (void)state;
    ts_offset_cursor c;
    put(1, 100, 1000, 5);
    put(1, 200, 2000, 5);
    put(3, 100, 1000, 5);
    put(1, 300, 2900, 6); /* a study was removed in between */
    assert_true(ts_offset_cursor_find(1, 250, &c) == false);
    assert_true(ts_offset_cursor_find(1, 300, &c));
    assert_int_equal(c.removals, 6);
    /* other levels keep theirs */
    assert_true(ts_offset_cursor_find(3, 100, &c));
}

static void the_least_recently_used_entry_is_replaced(void **state)
{
    (void)state;
    ts_offset_cursor c;
    for (long long i = 1; i <= TS_OFFSET_CURSORS_PER_LEVEL; i++)
        put(0, i * 100, i * 1000, 0);
    assert_true(ts_offset_cursor_find(0, 100, &c)); /* position 100 used again */
    put(0, 1000000, 9999999, 0);                    /* replaces position 200, the oldest */
    assert_true(ts_offset_cursor_find(0, 250, &c));
    assert_int_equal(c.position, 100);
    assert_true(ts_offset_cursor_find(0, 1000000, &c));
    assert_int_equal(c.after_id, 9999999);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(finds_the_nearest_position_at_or_below, reset),
        cmocka_unit_test_setup(a_position_taken_again_replaces_its_entry, reset),
        cmocka_unit_test_setup(a_new_removal_count_forgets_the_older_entries, reset),
        cmocka_unit_test_setup(the_least_recently_used_entry_is_replaced, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
