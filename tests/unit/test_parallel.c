/* ts_parallel_run (lib/base/parallel.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <pthread.h>

#include <cmocka.h>

#include "base/parallel.h"

#define ITEMS 1000

typedef struct work {
    atomic_size_t next;
    atomic_int done[ITEMS];
    pthread_mutex_t mu;
    pthread_t seen[8];
    size_t nseen;
} work;

static void *take_items(void *arg)
{
    work *w = arg;
    pthread_mutex_lock(&w->mu);
    if (w->nseen < 8)
        w->seen[w->nseen++] = pthread_self();
    pthread_mutex_unlock(&w->mu);
    for (;;) {
        size_t k = atomic_fetch_add(&w->next, 1);
        if (k >= ITEMS)
            return NULL;
        atomic_fetch_add(&w->done[k], 1);
    }
}

static void run(size_t n, size_t expect_threads)
{
    static work w;
    w = (work){0};
    pthread_mutex_init(&w.mu, NULL);
    ts_parallel_run(take_items, &w, n);
    for (size_t k = 0; k < ITEMS; k++)
        assert_int_equal(atomic_load(&w.done[k]), 1); /* each item once */
    assert_int_equal(w.nseen, expect_threads);
    /* the caller's own thread is one of them */
    int caller = 0;
    for (size_t t = 0; t < w.nseen; t++)
        caller += pthread_equal(w.seen[t], pthread_self()) != 0;
    assert_int_equal(caller, 1);
    pthread_mutex_destroy(&w.mu);
}

static void every_item_once_on_n_threads(void **state)
{
    (void)state;
    run(4, 4);
}

static void one_thread_is_the_caller_alone(void **state)
{
    (void)state;
    run(1, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_item_once_on_n_threads),
        cmocka_unit_test(one_thread_is_the_caller_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
