/* ts_parallel_run (parallel.h). */
#include "base/parallel.h"

#include <pthread.h>
#include <stdlib.h>

void ts_parallel_run(void *(*fn)(void *), void *arg, size_t n)
{
    pthread_t *threads = n > 1 ? malloc((n - 1) * sizeof(*threads)) : NULL;
    size_t started = 0;
    while (threads && started < n - 1 && pthread_create(&threads[started], NULL, fn, arg) == 0)
        started++; /* fewer threads: the others do their share */
    fn(arg);
    for (size_t t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    free(threads);
}
