/* lib/base/xalloc.h: what its callers rely on besides "never NULL": a size of 0
 * gives a pointer to free (not NULL, so not an abort), xcalloc zeroes,
 * xrealloc keeps the contents, xstrdup copies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/xalloc.h"

static void test_size_zero_gives_a_pointer(void **state)
{
    (void)state;
    void *a = xmalloc(0);
    void *b = xcalloc(0, 8);
    void *c = xcalloc(8, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    /* realloc(p, 0) may free p and answer NULL; xrealloc must not abort */
    void *d = xrealloc(xmalloc(16), 0);
    assert_non_null(d);
    free(a);
    free(b);
    free(c);
    free(d);
}

static void test_contents(void **state)
{
    (void)state;
    uint64_t *z = xcalloc(64, sizeof(*z));
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(z[i], 0);
    free(z);

    char *p = xmalloc(4);
    memcpy(p, "abc", 4);
    p = xrealloc(p, 1 << 20);
    assert_string_equal(p, "abc");
    free(p);
    p = xrealloc(NULL, 8); /* as malloc */
    assert_non_null(p);
    free(p);

    const char *s = "1.2.840.10008";
    char *d = xstrdup(s);
    assert_ptr_not_equal(d, s);
    assert_string_equal(d, s);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_zero_gives_a_pointer),
        cmocka_unit_test(test_contents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
