#include "base/ids.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sha1_id(const char *const *parts, int n, char out[TS_ID_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        abort();
    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
    for (int i = 0; i < n; i++) {
        if (i > 0)
            EVP_DigestUpdate(ctx, "|", 1);
        EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]));
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (unsigned i = 0; i < 20; i++) {
        if (i > 0 && i % 4 == 0)
            out[o++] = '-';
        out[o++] = hex[md[i] >> 4];
        out[o++] = hex[md[i] & 15];
    }
    out[o] = '\0';
}

void ts_ids_compute(const char *patient_id, const char *study_uid, const char *series_uid,
                    const char *sop_uid, ts_ids *out)
{
    const char *parts[4] = {patient_id ? patient_id : "", study_uid ? study_uid : "",
                            series_uid ? series_uid : "", sop_uid ? sop_uid : ""};
    sha1_id(parts, 1, out->patient);
    sha1_id(parts, 2, out->study);
    sha1_id(parts, 3, out->series);
    sha1_id(parts, 4, out->instance);
}

bool ts_id_is_lower_uuid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-'))
            return false;
    return true;
}

bool ts_id_is_valid(const char *s)
{
    if (!s || strlen(s) != TS_ID_LEN)
        return false;
    for (int i = 0; i < TS_ID_LEN; i++) {
        if (i % 9 == 8) {
            if (s[i] != '-')
                return false;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

const char *ts_level_name(ts_level level)
{
    static const char *const names[] = {"Patient", "Study", "Series", "Instance"};
    return (unsigned)level < 4 ? names[level] : "Unknown";
}
