/* Running one function on a few threads at once, the calling thread included. */
#ifndef TS_PARALLEL_H
#define TS_PARALLEL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Calls fn(arg) on n threads (n >= 1): n - 1 new ones and the caller's, and
 * returns when every call has returned. fn shares its work out itself (e.g.
 * each call takes items from an atomic counter until none are left), so a
 * thread that cannot be created is not an error: the others do its share. */
void ts_parallel_run(void *(*fn)(void *), void *arg, size_t n);

#ifdef __cplusplus
}
#endif

#endif
