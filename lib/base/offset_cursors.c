/* Keyset cursors behind Orthanc's offset paging (offset_cursors.h). */
#include "base/offset_cursors.h"

#include <pthread.h>
#include <string.h>

typedef struct entry {
    ts_offset_cursor c;
    unsigned long long used; /* 0: free */
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry table[TS_OFFSET_CURSOR_LEVELS][TS_OFFSET_CURSORS_PER_LEVEL];
static unsigned long long tick;

static bool valid_level(int level)
{
    return level >= 0 && level < TS_OFFSET_CURSOR_LEVELS;
}

bool ts_offset_cursor_find(int level, long long offset, ts_offset_cursor *out)
{
    if (!valid_level(level) || offset <= 0)
        return false;
    pthread_mutex_lock(&lock);
    entry *best = NULL;
    for (int i = 0; i < TS_OFFSET_CURSORS_PER_LEVEL; i++) {
        entry *e = &table[level][i];
        if (e->used && e->c.position <= offset && (!best || e->c.position > best->c.position))
            best = e;
    }
    if (best) {
        best->used = ++tick;
        *out = best->c;
    }
    pthread_mutex_unlock(&lock);
    return best != NULL;
}

void ts_offset_cursor_put(int level, const ts_offset_cursor *c)
{
    if (!valid_level(level) || c->position <= 0)
        return;
    pthread_mutex_lock(&lock);
    entry *slot = NULL;
    for (int i = 0; i < TS_OFFSET_CURSORS_PER_LEVEL; i++) {
        entry *e = &table[level][i];
        if (e->used && e->c.removals != c->removals)
            e->used = 0; /* taken before a removal: positions may have moved */
        if (e->used && e->c.position == c->position)
            slot = e;
    }
    for (int i = 0; i < TS_OFFSET_CURSORS_PER_LEVEL && !slot; i++)
        if (!table[level][i].used)
            slot = &table[level][i];
    if (!slot) {
        slot = &table[level][0];
        for (int i = 1; i < TS_OFFSET_CURSORS_PER_LEVEL; i++)
            if (table[level][i].used < slot->used)
                slot = &table[level][i];
    }
    slot->c = *c;
    slot->used = ++tick;
    pthread_mutex_unlock(&lock);
}

void ts_offset_cursor_reset(void)
{
    pthread_mutex_lock(&lock);
    memset(table, 0, sizeof(table));
    pthread_mutex_unlock(&lock);
}
