/* JWT bearer tokens (see rest_jwt.h). Only RS256 and ES256 are accepted, and
 * the algorithm must fit the key's type: "alg": "none", HS256 (which would use
 * a public key as a shared secret) and a token signed with an RSA key but
 * claiming ES256 are refused before any signature is checked. */
#include "rest_jwt.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/config.h"
#include "base/log.h"
#include "rest_labels.h"

typedef enum { KEY_RSA, KEY_EC } key_type;

typedef struct jwk {
    char kid[128];
    key_type type;
    EVP_PKEY *pkey;
} jwk;

/* Tokens verified lately, by the SHA-256 of the whole token: a client sends
 * the same token with each request, and its signature need not be checked
 * again (an RSA verification costs more than the rest of a small read). An
 * entry lasts until the token expires, at most TOKEN_CACHE_S, and every entry
 * is dropped when the keys change. */
#define TOKEN_CACHE 256
#define TOKEN_CACHE_S 60
typedef struct cached_token {
    unsigned char sha256[32];
    double expires; /* monotonic; 0: empty */
    time_t exp;     /* the token's own expiry, with leeway, in wall-clock time */
    rest_principal who;
} cached_token;

struct rest_jwt {
    cached_token cache[TOKEN_CACHE]; /* under mu */
    pthread_rwlock_t lock;           /* over keys: verifiers read, a refresh swaps them */
    jwk *keys;
    size_t nkeys;
    const char *file, *url;
    int refresh_s;
    long leeway;
    const char *issuer, *audience, *name_claim, *role_claim, *labels_claim;
    pthread_mutex_t mu; /* over the refresher's wake-up */
    pthread_cond_t cv;
    bool stop, wanted; /* wanted: a token named a key we do not have */
    double last_fetch;
    pthread_t thread;
    bool thread_started;
};

/* ---- base64url (RFC 4648 section 5, no padding) ------------------------------- */

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes n characters into a malloc'd buffer (*len bytes); NULL if malformed. */
static unsigned char *b64url_decode(const char *s, size_t n, size_t *len)
{
    if (n % 4 == 1)
        return NULL;
    unsigned char *out = malloc(n * 3 / 4 + 3);
    if (!out)
        abort();
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value(s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *len = o;
    return out;
}

static unsigned char *b64url_field(json_t *obj, const char *name, size_t *len)
{
    const char *s = json_string_value(json_object_get(obj, name));
    return s ? b64url_decode(s, strlen(s), len) : NULL;
}

/* ---- JWKS ---------------------------------------------------------------------- */

static EVP_PKEY *pkey_from(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* One JWK: RSA (n, e; 2048 bits at least) or EC on P-256 (x, y). */
static bool jwk_parse(json_t *k, jwk *out)
{
    const char *kty = json_string_value(json_object_get(k, "kty"));
    const char *use = json_string_value(json_object_get(k, "use"));
    const char *kid = json_string_value(json_object_get(k, "kid"));
    memset(out, 0, sizeof(*out));
    if (!kty || (use && strcmp(use, "sig") != 0))
        return false;
    snprintf(out->kid, sizeof(out->kid), "%s", kid ? kid : "");
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    size_t l1 = 0, l2 = 0;
    unsigned char *a = NULL, *b = NULL;
    BIGNUM *n = NULL, *e = NULL;
    if (strcmp(kty, "RSA") == 0) {
        out->type = KEY_RSA;
        a = b64url_field(k, "n", &l1);
        b = b64url_field(k, "e", &l2);
        if (a && b && (n = BN_bin2bn(a, (int)l1, NULL)) && (e = BN_bin2bn(b, (int)l2, NULL)) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            out->pkey = pkey_from("RSA", bld);
        if (out->pkey && EVP_PKEY_get_bits(out->pkey) < 2048) {
            EVP_PKEY_free(out->pkey);
            out->pkey = NULL;
        }
    } else if (strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(k, "crv"));
        out->type = KEY_EC;
        a = b64url_field(k, "x", &l1);
        b = b64url_field(k, "y", &l2);
        unsigned char pub[65] = {0x04}; /* uncompressed point */
        /* RFC 7518 6.2.1.2 wants each coordinate in full (32 bytes), but some
         * writers drop its leading zero bytes (PyJWT 2.6, Debian 12's: one key in
         * about 120): the same number, left-padded here; OpenSSL still checks
         * that the point is on the curve */
        if (crv && strcmp(crv, "P-256") == 0 && a && b && l1 >= 1 && l1 <= 32 && l2 >= 1 &&
            l2 <= 32) {
            memcpy(pub + 1 + (32 - l1), a, l1);
            memcpy(pub + 33 + (32 - l2), b, l2);
            if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
                OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)))
                out->pkey = pkey_from("EC", bld);
        }
    }
    BN_free(n);
    BN_free(e);
    free(a);
    free(b);
    OSSL_PARAM_BLD_free(bld);
    return out->pkey != NULL;
}

static void keys_free(jwk *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        EVP_PKEY_free(keys[i].pkey);
    free(keys);
}

/* Replaces the keys with those of a JWKS text; a text without one usable key
 * changes nothing (a provider's bad answer does not lock everyone out). */
static int keys_load(rest_jwt *j, const char *text, size_t len, const char *from, ts_err *err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    json_t *arr = json_object_get(doc, "keys");
    jwk *keys = calloc(json_array_size(arr) + 1, sizeof(jwk));
    if (!keys)
        abort();
    size_t n = 0, i;
    json_t *k;
    json_array_foreach(arr, i, k)
    {
        if (jwk_parse(k, &keys[n]))
            n++;
    }
    json_decref(doc);
    if (n == 0) {
        free(keys);
        return ts_err_set(err, TS_EINVAL,
                          "%s holds no usable signing key (RSA >= 2048 bits or "
                          "EC P-256 in a JWKS {\"keys\": [...]})",
                          from);
    }
    pthread_rwlock_wrlock(&j->lock);
    jwk *old = j->keys;
    size_t nold = j->nkeys;
    j->keys = keys;
    j->nkeys = n;
    pthread_rwlock_unlock(&j->lock);
    keys_free(old, nold);
    pthread_mutex_lock(&j->mu);
    memset(j->cache, 0, sizeof(j->cache)); /* tokens are checked against the new keys */
    pthread_mutex_unlock(&j->mu);
    ts_info("jwks loaded", "from=%s keys=%zu", from, n);
    return 0;
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *user)
{
    char **buf = user;
    size_t old = *buf ? strlen(*buf) : 0, add = size * nmemb;
    if (old + add > 1024 * 1024)
        return 0; /* a JWKS is small: refuse a huge answer */
    *buf = realloc(*buf, old + add + 1);
    if (!*buf)
        abort();
    memcpy(*buf + old, data, add);
    (*buf)[old + add] = '\0';
    return add;
}

static int fetch(rest_jwt *j, ts_err *err)
{
    int rc = 0;
    if (j->file[0]) {
        FILE *f = fopen(j->file, "r");
        if (!f)
            return ts_err_set(err, TS_EIO, "TESSERA_JWT_JWKS_FILE %s: %m", j->file);
        char *buf = malloc(1024 * 1024 + 1);
        if (!buf)
            abort();
        size_t n = fread(buf, 1, 1024 * 1024, f);
        fclose(f);
        rc = keys_load(j, buf, n, j->file, err);
        free(buf);
        return rc;
    }
    CURL *c = curl_easy_init();
    char *body = NULL;
    long status = 0;
    curl_easy_setopt(c, CURLOPT_URL, j->url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK)
        rc = ts_err_set(err, TS_EIO, "TESSERA_JWT_JWKS_URL %s: %s", j->url, curl_easy_strerror(cc));
    else if (status != 200 || !body)
        rc = ts_err_set(err, TS_EIO, "TESSERA_JWT_JWKS_URL %s: HTTP %ld", j->url, status);
    else
        rc = keys_load(j, body, strlen(body), j->url, err);
    free(body);
    return rc;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Re-reads the keys every refresh_s seconds, and soon after a token names an
 * unknown key (a provider's key rotation), at most every 10 s. */
static void *refresher(void *arg)
{
    rest_jwt *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += j->wanted ? 10 : j->refresh_s;
        if (!j->wanted)
            pthread_cond_timedwait(&j->cv, &j->mu, &until);
        if (j->stop)
            break;
        if (j->wanted && mono_s() - j->last_fetch < 10) {
            pthread_cond_timedwait(&j->cv, &j->mu, &until);
            if (j->stop)
                break;
        }
        j->wanted = false;
        j->last_fetch = mono_s();
        pthread_mutex_unlock(&j->mu);
        ts_err err;
        if (fetch(j, &err))
            ts_warn("jwks refresh failed", "error=\"%s\"", err.msg);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int rest_jwt_start(rest_jwt **out, ts_err *err)
{
    *out = NULL;
    const char *file = ts_cfg_str(TESSERA_JWT_JWKS_FILE);
    const char *url = ts_cfg_str(TESSERA_JWT_JWKS_URL);
    if (!file[0] && !url[0])
        return 0;
    if (file[0] && url[0])
        return ts_err_set(err, TS_EINVAL,
                          "set TESSERA_JWT_JWKS_FILE or TESSERA_JWT_JWKS_URL, "
                          "not both");
    rest_jwt *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    pthread_rwlock_init(&j->lock, NULL);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->file = file;
    j->url = url;
    j->refresh_s = (int)ts_cfg_int(TESSERA_JWT_JWKS_REFRESH);
    j->leeway = ts_cfg_int(TESSERA_JWT_LEEWAY);
    j->issuer = ts_cfg_str(TESSERA_JWT_ISSUER);
    j->audience = ts_cfg_str(TESSERA_JWT_AUDIENCE);
    j->name_claim = ts_cfg_str(TESSERA_JWT_NAME_CLAIM);
    j->role_claim = ts_cfg_str(TESSERA_JWT_ROLE_CLAIM);
    j->labels_claim = ts_cfg_str(TESSERA_JWT_LABELS_CLAIM);
    if (url[0])
        curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = fetch(j, err);
    if (rc && url[0]) {
        /* the provider may come up after us: keep trying, refuse tokens meanwhile */
        ts_warn("jwks not loaded yet", "error=\"%s\"", err->msg);
        j->wanted = true;
        rc = 0;
    }
    if (rc == 0 && pthread_create(&j->thread, NULL, refresher, j) == 0)
        j->thread_started = true;
    if (rc) {
        rest_jwt_stop(j);
        return rc;
    }
    *out = j;
    return 0;
}

void rest_jwt_stop(rest_jwt *j)
{
    if (!j)
        return;
    if (j->thread_started) {
        pthread_mutex_lock(&j->mu);
        j->stop = true;
        pthread_cond_signal(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL);
    }
    keys_free(j->keys, j->nkeys);
    pthread_rwlock_destroy(&j->lock);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* ---- verification -------------------------------------------------------------- */

static bool verify_with(const jwk *k, bool es256, const char *data, size_t len,
                        const unsigned char *sig, size_t siglen)
{
    unsigned char *der = NULL;
    int derlen = 0;
    if (es256) {
        /* JWS carries r || s (RFC 7518 3.4); OpenSSL wants DER */
        if (siglen != 64)
            return false;
        ECDSA_SIG *s = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
        if (!s || !r || !ss || !ECDSA_SIG_set0(s, r, ss)) {
            BN_free(r);
            BN_free(ss);
            ECDSA_SIG_free(s);
            return false;
        }
        derlen = i2d_ECDSA_SIG(s, &der);
        ECDSA_SIG_free(s);
        if (derlen <= 0)
            return false;
        sig = der;
        siglen = (size_t)derlen;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
              EVP_DigestVerify(md, sig, siglen, (const unsigned char *)data, len) == 1;
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    return ok;
}

/* A claim by a dotted path ("realm_access.roles"), or NULL. */
static json_t *claim(json_t *claims, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *cur = claims;
    char *save = NULL;
    for (const char *p = strtok_r(buf, ".", &save); p && cur; p = strtok_r(NULL, ".", &save)) {
        json_t *next = json_object_get(cur, p);
        cur = next;
    }
    return json_is_object(claims) ? cur : NULL;
}

static int fail(char *reason, size_t size, const char *why)
{
    snprintf(reason, size, "%s", why);
    return -1;
}

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int verify_uncached(rest_jwt *j, const char *token, rest_principal *who, time_t *exp_out,
                           char *reason, size_t size);

int rest_jwt_verify(rest_jwt *j, const char *token, rest_principal *who, char *reason, size_t size)
{
    unsigned char sha[32];
    unsigned int n = 0;
    EVP_Digest(token, strlen(token), sha, &n, EVP_sha256(), NULL);
    cached_token *slot = &j->cache[(sha[0] | (unsigned)sha[1] << 8) % TOKEN_CACHE];
    double t = now_mono();
    pthread_mutex_lock(&j->mu);
    bool hit = slot->expires > t && time(NULL) <= slot->exp && memcmp(slot->sha256, sha, 32) == 0;
    if (hit)
        *who = slot->who;
    pthread_mutex_unlock(&j->mu);
    if (hit)
        return 0;
    time_t exp;
    if (verify_uncached(j, token, who, &exp, reason, size))
        return -1;
    pthread_mutex_lock(&j->mu);
    memcpy(slot->sha256, sha, 32);
    slot->who = *who;
    slot->exp = exp;
    slot->expires = t + TOKEN_CACHE_S;
    pthread_mutex_unlock(&j->mu);
    return 0;
}

static int verify_uncached(rest_jwt *j, const char *token, rest_principal *who, time_t *exp_out,
                           char *reason, size_t size)
{
    const char *dot1 = strchr(token, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot1 || !dot2 || strchr(dot2 + 1, '.') || strlen(token) > 16384)
        return fail(reason, size, "not a JWS compact serialization");
    size_t hlen = 0, clen = 0, slen = 0;
    unsigned char *h = b64url_decode(token, (size_t)(dot1 - token), &hlen);
    unsigned char *c = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &clen);
    unsigned char *sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), &slen);
    json_t *header = h ? json_loadb((const char *)h, hlen, 0, NULL) : NULL;
    json_t *claims = c ? json_loadb((const char *)c, clen, 0, NULL) : NULL;
    int rc = -1;
    if (!json_is_object(header) || !json_is_object(claims) || !sig) {
        fail(reason, size, "undecodable header, claims or signature");
        goto out;
    }
    const char *alg = json_string_value(json_object_get(header, "alg"));
    const char *kid = json_string_value(json_object_get(header, "kid"));
    bool es256 = alg && strcmp(alg, "ES256") == 0;
    if (!alg || (!es256 && strcmp(alg, "RS256") != 0)) {
        snprintf(reason, size, "algorithm \"%.20s\" refused (RS256 or ES256 only)", alg ? alg : "");
        goto out;
    }
    /* the signature first: nothing of an unverified token is believed */
    bool verified = false, kid_known = false;
    pthread_rwlock_rdlock(&j->lock);
    for (size_t i = 0; i < j->nkeys && !verified; i++) {
        const jwk *k = &j->keys[i];
        if (kid && strcmp(k->kid, kid) != 0)
            continue;
        kid_known = true;
        if (k->type != (es256 ? KEY_EC : KEY_RSA))
            continue;
        verified = verify_with(k, es256, token, (size_t)(dot2 - token), sig, slen);
    }
    pthread_rwlock_unlock(&j->lock);
    if (!verified) {
        if (kid && !kid_known && j->url[0]) {
            pthread_mutex_lock(&j->mu);
            j->wanted = true; /* perhaps a new key of the provider */
            pthread_cond_signal(&j->cv);
            pthread_mutex_unlock(&j->mu);
        }
        fail(reason, size, kid && !kid_known ? "unknown key id" : "bad signature");
        goto out;
    }
    time_t now = time(NULL);
    json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
    if (!json_is_number(exp)) {
        fail(reason, size, "no expiry (exp)");
        goto out;
    }
    if ((double)now > json_number_value(exp) + (double)j->leeway) {
        fail(reason, size, "expired");
        goto out;
    }
    /* for the cache, which keeps nothing longer than TOKEN_CACHE_S anyway (and a
     * huge exp must not overflow time_t) */
    double until = json_number_value(exp) + (double)j->leeway;
    *exp_out = until < (double)now + TOKEN_CACHE_S ? (time_t)until : now + TOKEN_CACHE_S;
    if (nbf && (!json_is_number(nbf) || (double)now + (double)j->leeway < json_number_value(nbf))) {
        fail(reason, size, "not valid yet (nbf)");
        goto out;
    }
    if (j->issuer[0]) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || strcmp(iss, j->issuer) != 0) {
            fail(reason, size, "wrong issuer");
            goto out;
        }
    }
    if (j->audience[0]) {
        json_t *aud = json_object_get(claims, "aud");
        bool ok = json_is_string(aud) && strcmp(json_string_value(aud), j->audience) == 0;
        size_t i;
        json_t *a;
        json_array_foreach(aud, i, a) ok =
            ok || (json_is_string(a) && strcmp(json_string_value(a), j->audience) == 0);
        if (!ok) {
            fail(reason, size, "wrong audience");
            goto out;
        }
    }
    memset(who, 0, sizeof(*who));
    const char *name = json_string_value(claim(claims, j->name_claim));
    snprintf(who->name, sizeof(who->name), "jwt:%.120s", name ? name : "");
    /* the role claim: a string or a list; the highest known role wins */
    json_t *roles = claim(claims, j->role_claim);
    if (json_is_string(roles)) {
        const char *r = json_string_value(roles);
        who->role = !strcmp(r, "admin")   ? REST_ROLE_ADMIN
                    : !strcmp(r, "write") ? REST_ROLE_WRITE
                    : !strcmp(r, "read")  ? REST_ROLE_READ
                                          : REST_ROLE_NONE;
    }
    size_t i;
    json_t *r;
    json_array_foreach(roles, i, r)
    {
        const char *s = json_string_value(r);
        rest_role role = !s                    ? REST_ROLE_NONE
                         : !strcmp(s, "admin") ? REST_ROLE_ADMIN
                         : !strcmp(s, "write") ? REST_ROLE_WRITE
                         : !strcmp(s, "read")  ? REST_ROLE_READ
                                               : REST_ROLE_NONE;
        if (role > who->role)
            who->role = role;
    }
    /* the labels claim, when present, restricts reading to those labels;
     * names that are no valid label are ignored (they can match nothing) */
    json_t *labels = claim(claims, j->labels_claim);
    if (labels && who->role != REST_ROLE_ADMIN) {
        who->restricted = true;
        json_t *l;
        json_array_foreach(labels, i, l)
        {
            const char *s = json_string_value(l);
            if (s && rest_label_is_valid(s) && who->nlabels < REST_MAX_GRANTS)
                snprintf(who->labels[who->nlabels++], sizeof(who->labels[0]), "%s", s);
        }
    }
    rc = 0;
out:
    json_decref(header);
    json_decref(claims);
    free(h);
    free(c);
    free(sig);
    return rc;
}
