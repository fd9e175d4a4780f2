/* gzip answers (see rest_gzip.h). */
#include "rest_gzip.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define GZIP_MIN 1024

bool rest_accepts_gzip(rest_request *req)
{
    const char *h = rest_header(req, "Accept-Encoding");
    while (h && *h) {
        while (*h == ' ' || *h == '\t' || *h == ',')
            h++;
        size_t n = strcspn(h, ",; \t");
        bool named = (n == 4 && strncasecmp(h, "gzip", 4) == 0) || (n == 1 && h[0] == '*');
        const char *end = h + strcspn(h, ",");
        /* a parameter q=0 (or 0.0...) refuses the coding */
        bool refused = false;
        for (const char *p = h + n; p < end; p++) {
            if ((*p == 'q' || *p == 'Q') && p[1] == '=') {
                const char *v = p + 2;
                refused = *v == '0';
                for (v++; refused && v < end && !isspace((unsigned char)*v) && *v != ';'; v++)
                    refused = *v == '.' || *v == '0';
                break;
            }
        }
        if (named && !refused)
            return true;
        h = end;
    }
    return false;
}

/* body as a gzip stream in a new buffer; NULL when zlib fails (then the body
 * goes out as it is). */
static void *gzip(const void *body, size_t len, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, len);
    unsigned char *out = malloc(cap);
    if (!out) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (unsigned char *)body;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_len = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

void rest_reply_owned_gzip(rest_request *req, int status, void *body, size_t len,
                           const char *content_type)
{
    size_t zlen = 0;
    void *z = len >= GZIP_MIN && len < 0xffffffffu && rest_accepts_gzip(req)
                  ? gzip(body, len, &zlen)
                  : NULL;
    if (z) {
        free(body);
        rest_reply_owned(req, status, z, zlen, content_type);
        rest_add_header(req, "Content-Encoding", "gzip");
    } else {
        rest_reply_owned(req, status, body, len, content_type);
    }
    rest_add_header(req, "Vary", "Accept-Encoding");
}
