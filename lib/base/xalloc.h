/* Allocation that cannot fail: out of memory aborts (docs/style.md), so callers
 * need no NULL checks. A size of 0 gives a valid pointer to free, never NULL,
 * so that an empty allocation is not taken for a failed one. */
#ifndef TS_XALLOC_H
#define TS_XALLOC_H

#include <stdlib.h>
#include <string.h>

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* Also aborts when n * size overflows (calloc then fails). */
static inline void *xcalloc(size_t n, size_t size)
{
    void *p = n && size ? calloc(n, size) : calloc(1, 1);
    if (!p)
        abort();
    return p;
}

/* realloc(p, 0) may free p and return NULL; here it keeps a 1-byte block. */
static inline void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}

static inline char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

#endif
