/* Where a DICOM Part 10 file's top-level Pixel Data element starts, found by
 * walking the file's element headers without parsing values, as Orthanc's
 * DicomStreamReader does for its PixelDataOffset metadata. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "dicom/dicom.h"

#define UNDEFINED 0xFFFFFFFFu
#define ITEM 0xFFFEE000u
#define ITEM_END 0xFFFEE00Du
#define SEQ_END 0xFFFEE0DDu
#define PIXEL_DATA 0x7FE00010u
#define MAX_DEPTH 64 /* nested sequences; deeper files are not walked */

typedef struct walker {
    FILE *f;
    bool explicit_vr, big_endian;
} walker;

static uint32_t u16(const unsigned char *b, bool be)
{
    return be ? (uint32_t)b[0] << 8 | b[1] : (uint32_t)b[1] << 8 | b[0];
}

static uint32_t u32(const unsigned char *b, bool be)
{
    return be ? (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]
              : (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
}

/* VRs whose explicit header has 2 reserved bytes and a 32-bit length. */
static bool long_vr(const unsigned char *vr)
{
    static const char *const v[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ",
                                    "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        if (memcmp(vr, v[i], 2) == 0)
            return true;
    return false;
}

/* Reads one element header: its tag and value length. Items and delimiters
 * have no VR in any transfer syntax. */
static int read_header(walker *w, uint32_t *tag, uint32_t *len)
{
    unsigned char b[12];
    if (fread(b, 1, 8, w->f) != 8)
        return -1;
    bool be = w->big_endian;
    *tag = u16(b, be) << 16 | u16(b + 2, be);
    if ((*tag >> 16) == 0xFFFE || !w->explicit_vr) {
        *len = u32(b + 4, be);
        return 0;
    }
    if (long_vr(b + 4)) {
        if (fread(b + 8, 1, 4, w->f) != 4)
            return -1;
        *len = u32(b + 8, be);
    } else {
        *len = u16(b + 6, be);
    }
    return 0;
}

/* Walks elements until end (a file offset; -1: the end of the file or until
 * the delimiter `until`). At depth 0 a Pixel Data element stops the walk:
 * 1 and its offset in *found. 0 at the end, -1 on a malformed file. */
static int walk(walker *w, long long end, uint32_t until, int depth, long long *found)
{
    if (depth > MAX_DEPTH)
        return -1;
    for (;;) {
        long long at = ftello(w->f);
        if (end >= 0 && at >= end)
            return 0;
        uint32_t tag, len;
        if (read_header(w, &tag, &len))
            return end < 0 && until == 0 && feof(w->f) ? 0 : -1;
        if (depth == 0 && tag == PIXEL_DATA) {
            *found = at;
            return 1;
        }
        if (until && tag == until)
            return 0;
        if (tag == ITEM) {
            /* an item: its elements, up to its length or its delimiter */
            long long item_end = len == UNDEFINED ? -1 : ftello(w->f) + len;
            int rc = walk(w, item_end, len == UNDEFINED ? ITEM_END : 0, depth + 1, found);
            if (rc)
                return rc;
            if (item_end >= 0 && fseeko(w->f, item_end, SEEK_SET))
                return -1;
            continue;
        }
        if (len == UNDEFINED) {
            /* a sequence of items up to its delimiter */
            int rc = walk(w, -1, SEQ_END, depth + 1, found);
            if (rc)
                return rc;
            continue;
        }
        if (fseeko(w->f, len, SEEK_CUR))
            return -1;
    }
}

/* Reads f from its start; closes it. */
static long long offset_in(FILE *f)
{
    if (!f)
        return -1;
    long long found = -1;
    unsigned char pre[132];
    walker w = {f, true, false};
    char ts[72] = "";
    if (fread(pre, 1, sizeof(pre), f) != sizeof(pre) || memcmp(pre + 128, "DICM", 4) != 0)
        goto out; /* no meta header: Orthanc records no offset either */
    /* the meta header: explicit VR little endian, group 0002 */
    for (;;) {
        long long at = ftello(f);
        unsigned char b[12];
        if (fread(b, 1, 8, f) != 8)
            goto out;
        uint32_t group = u16(b, false), elem = u16(b + 2, false);
        if (group != 0x0002) {
            if (fseeko(f, at, SEEK_SET))
                goto out;
            break;
        }
        uint32_t len;
        if (long_vr(b + 4)) {
            if (fread(b + 8, 1, 4, f) != 4)
                goto out;
            len = u32(b + 8, false);
        } else {
            len = u16(b + 6, false);
        }
        if (len == UNDEFINED)
            goto out;
        if (elem == 0x0010 && len < sizeof(ts)) {
            if (fread(ts, 1, len, f) != len)
                goto out;
            ts[len] = '\0';
            while (len && (ts[len - 1] == '\0' || ts[len - 1] == ' '))
                ts[--len] = '\0';
        } else if (fseeko(f, len, SEEK_CUR)) {
            goto out;
        }
    }
    if (strcmp(ts, "1.2.840.10008.1.2.1.99") == 0)
        goto out; /* deflated: the offset would be in the inflated stream */
    w.explicit_vr = strcmp(ts, "1.2.840.10008.1.2") != 0;
    w.big_endian = strcmp(ts, "1.2.840.10008.1.2.2") == 0;
    long long at = -1;
    if (walk(&w, -1, 0, 0, &at) == 1)
        found = at;
out:
    fclose(f);
    return found;
}

long long ts_dicom_pixel_data_offset(const char *path)
{
    return offset_in(fopen(path, "rb"));
}

long long ts_dicom_pixel_data_offset_buffer(const void *data, size_t len)
{
    /* the same walk over the bytes in memory (a stream that cannot seek past
     * their end: such a file is malformed there, -1 either way) */
    return len ? offset_in(fmemopen((void *)data, len, "rb")) : -1;
}
