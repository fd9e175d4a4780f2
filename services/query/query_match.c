#include "query_match.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dicom.h"
#include "base/xalloc.h"

/* Keys with more parameters than this are refused: a value list is one
 * parameter, so only an absurd identifier gets here. */
#define QUERY_MAX_PARAMS 200

typedef enum {
    MATCH_PLAIN,      /* single value, list, wildcard, range (by VR) */
    MATCH_NONE,       /* computed return key: never matched (PS3.4 C.3.4) */
    MATCH_MODALITIES, /* ModalitiesInStudy: any of the study's modalities */
} match_kind;

typedef struct tag_def {
    query_tag_info info;
    const char *expr; /* SQL of the value, on the aliases of query_build() */
    const char *norm; /* column of tessera_fold(expr) for case-insensitive names, or NULL */
    match_kind kind;
} tag_def;

#define T TS_TAG
#define P TS_LEVEL_PATIENT
#define S TS_LEVEL_STUDY
#define E TS_LEVEL_SERIES
#define I TS_LEVEL_INSTANCE
#define MT(a, k) "(" a ".main_tags->>'" k "')"

/* chr(92) is '\', the DICOM value separator, whatever standard_conforming_strings says. */
static const tag_def TAGS[] = {
    /* patient */
    {{T(0x0010, 0x0010), "PatientName", P, "PN"},
     "pa.patient_name",
     "pa.patient_name_norm",
     MATCH_PLAIN},
    {{T(0x0010, 0x0020), "PatientID", P, "LO"}, "pa.patient_id", NULL, MATCH_PLAIN},
    {{T(0x0010, 0x0030), "PatientBirthDate", P, "DA"}, "pa.patient_birth_date", NULL, MATCH_PLAIN},
    {{T(0x0010, 0x0040), "PatientSex", P, "CS"}, "pa.patient_sex", NULL, MATCH_PLAIN},
    {{T(0x0010, 0x1000), "OtherPatientIDs", P, "LO"},
     MT("pa", "OtherPatientIDs"),
     NULL,
     MATCH_PLAIN},
    {{T(0x0020, 0x1200), "NumberOfPatientRelatedStudies", P, "IS"},
     "(SELECT count(*) FROM resources x1 WHERE x1.parent_id = rpa.id)::text",
     NULL,
     MATCH_NONE},
    {{T(0x0020, 0x1202), "NumberOfPatientRelatedSeries", P, "IS"},
     "(SELECT count(*) FROM resources x1 JOIN resources x2 ON x2.parent_id = x1.id"
     " WHERE x1.parent_id = rpa.id)::text",
     NULL,
     MATCH_NONE},
    {{T(0x0020, 0x1204), "NumberOfPatientRelatedInstances", P, "IS"},
     "(SELECT count(*) FROM resources x1 JOIN resources x2 ON x2.parent_id = x1.id"
     " JOIN resources x3 ON x3.parent_id = x2.id WHERE x1.parent_id = rpa.id)::text",
     NULL,
     MATCH_NONE},
    /* study */
    {{T(0x0008, 0x0020), "StudyDate", S, "DA"}, "st.study_date", NULL, MATCH_PLAIN},
    {{T(0x0008, 0x0030), "StudyTime", S, "TM"}, "st.study_time", NULL, MATCH_PLAIN},
    {{T(0x0020, 0x0010), "StudyID", S, "SH"}, MT("st", "StudyID"), NULL, MATCH_PLAIN},
    {{T(0x0008, 0x1030), "StudyDescription", S, "LO"}, "st.study_description", NULL, MATCH_PLAIN},
    {{T(0x0008, 0x0050), "AccessionNumber", S, "SH"}, "st.accession_number", NULL, MATCH_PLAIN},
    {{T(0x0020, 0x000d), "StudyInstanceUID", S, "UI"}, "st.study_instance_uid", NULL, MATCH_PLAIN},
    {{T(0x0032, 0x1060), "RequestedProcedureDescription", S, "LO"},
     MT("st", "RequestedProcedureDescription"),
     NULL,
     MATCH_PLAIN},
    {{T(0x0008, 0x0080), "InstitutionName", S, "LO"},
     MT("st", "InstitutionName"),
     NULL,
     MATCH_PLAIN},
    {{T(0x0032, 0x1032), "RequestingPhysician", S, "PN"},
     MT("st", "RequestingPhysician"),
     NULL,
     MATCH_PLAIN},
    {{T(0x0008, 0x0090), "ReferringPhysicianName", S, "PN"},
     "st.referring_physician",
     "st.referring_physician_norm",
     MATCH_PLAIN},
    {{T(0x0008, 0x0061), "ModalitiesInStudy", S, "CS"},
     "array_to_string(st.modalities_in_study, chr(92))",
     NULL,
     MATCH_MODALITIES},
    {{T(0x0008, 0x0062), "SOPClassesInStudy", S, "UI"},
     "(SELECT string_agg(DISTINCT x3.sop_class_uid, chr(92) ORDER BY x3.sop_class_uid)"
     " FROM resources x1 JOIN resources x2 ON x2.parent_id = x1.id"
     " JOIN instances x3 ON x3.resource_id = x2.id WHERE x1.parent_id = rst.id)",
     NULL,
     MATCH_NONE},
    {{T(0x0020, 0x1206), "NumberOfStudyRelatedSeries", S, "IS"},
     "(SELECT count(*) FROM resources x1 WHERE x1.parent_id = rst.id)::text",
     NULL,
     MATCH_NONE},
    {{T(0x0020, 0x1208), "NumberOfStudyRelatedInstances", S, "IS"},
     "(SELECT count(*) FROM resources x1 JOIN resources x2 ON x2.parent_id = x1.id"
     " WHERE x1.parent_id = rst.id)::text",
     NULL,
     MATCH_NONE},
    /* series */
    {{T(0x0008, 0x0021), "SeriesDate", E, "DA"}, MT("se", "SeriesDate"), NULL, MATCH_PLAIN},
    {{T(0x0008, 0x0031), "SeriesTime", E, "TM"}, MT("se", "SeriesTime"), NULL, MATCH_PLAIN},
    {{T(0x0008, 0x0060), "Modality", E, "CS"}, "se.modality", NULL, MATCH_PLAIN},
    {{T(0x0008, 0x0070), "Manufacturer", E, "LO"}, MT("se", "Manufacturer"), NULL, MATCH_PLAIN},
    {{T(0x0008, 0x1010), "StationName", E, "SH"}, MT("se", "StationName"), NULL, MATCH_PLAIN},
    {{T(0x0008, 0x103e), "SeriesDescription", E, "LO"}, "se.series_description", NULL, MATCH_PLAIN},
    {{T(0x0018, 0x0015), "BodyPartExamined", E, "CS"},
     MT("se", "BodyPartExamined"),
     NULL,
     MATCH_PLAIN},
    {{T(0x0018, 0x1030), "ProtocolName", E, "LO"}, MT("se", "ProtocolName"), NULL, MATCH_PLAIN},
    {{T(0x0020, 0x0011), "SeriesNumber", E, "IS"}, MT("se", "SeriesNumber"), NULL, MATCH_PLAIN},
    {{T(0x0020, 0x000e), "SeriesInstanceUID", E, "UI"},
     "se.series_instance_uid",
     NULL,
     MATCH_PLAIN},
    {{T(0x0008, 0x1070), "OperatorsName", E, "PN"}, MT("se", "OperatorsName"), NULL, MATCH_PLAIN},
    /* PS3.18 Table 10.6.1-5's keys that are no main tags (0038_series_request_attributes.sql) */
    {{T(0x0040, 0x0244), "PerformedProcedureStepStartDate", E, "DA"},
     "se.pps_start_date",
     NULL,
     MATCH_PLAIN},
    {{T(0x0040, 0x0245), "PerformedProcedureStepStartTime", E, "TM"},
     "se.pps_start_time",
     NULL,
     MATCH_PLAIN},
    /* its items as a JSON array ([{"00400009": ..}]); matched through ITEM_TAGS */
    {{T(0x0040, 0x0275), "RequestAttributesSequence", E, "SQ"},
     "se.request_attributes::text",
     NULL,
     MATCH_NONE},
    {{T(0x0020, 0x1209), "NumberOfSeriesRelatedInstances", E, "IS"},
     "(SELECT count(*) FROM resources x1 WHERE x1.parent_id = rse.id)::text",
     NULL,
     MATCH_NONE},
    /* instance */
    {{T(0x0008, 0x0018), "SOPInstanceUID", I, "UI"}, "i.sop_instance_uid", NULL, MATCH_PLAIN},
    {{T(0x0008, 0x0016), "SOPClassUID", I, "UI"}, "i.sop_class_uid", NULL, MATCH_PLAIN},
    {{T(0x0020, 0x0013), "InstanceNumber", I, "IS"}, MT("i", "InstanceNumber"), NULL, MATCH_PLAIN},
    {{T(0x0008, 0x0012), "InstanceCreationDate", I, "DA"},
     MT("i", "InstanceCreationDate"),
     NULL,
     MATCH_PLAIN},
    {{T(0x0008, 0x0013), "InstanceCreationTime", I, "TM"},
     MT("i", "InstanceCreationTime"),
     NULL,
     MATCH_PLAIN},
    {{T(0x0020, 0x0012), "AcquisitionNumber", I, "IS"},
     MT("i", "AcquisitionNumber"),
     NULL,
     MATCH_PLAIN},
    {{T(0x0028, 0x0008), "NumberOfFrames", I, "IS"}, MT("i", "NumberOfFrames"), NULL, MATCH_PLAIN},
    {{T(0x0020, 0x4000), "ImageComments", I, "LT"}, MT("i", "ImageComments"), NULL, MATCH_PLAIN},
};

/* Attributes of sequence items: expr is on `it`, one item of the sequence's
 * stored array (jsonb_array_elements(items)). */
typedef struct item_def {
    uint32_t sequence;
    const char *items; /* SQL of the sequence's JSON array */
    tag_def def;
} item_def;

static const item_def ITEM_TAGS[] = {
    {T(0x0040, 0x0275),
     "se.request_attributes",
     {{T(0x0040, 0x0009), "ScheduledProcedureStepID", E, "SH"},
      "(it->>'00400009')",
      NULL,
      MATCH_PLAIN}},
    {T(0x0040, 0x0275),
     "se.request_attributes",
     {{T(0x0040, 0x1001), "RequestedProcedureID", E, "SH"},
      "(it->>'00401001')",
      NULL,
      MATCH_PLAIN}},
};

#undef T
#undef P
#undef S
#undef E
#undef I
#undef MT

#define N_TAGS (sizeof(TAGS) / sizeof(TAGS[0]))

static const tag_def *find_def(uint32_t tag)
{
    for (size_t i = 0; i < N_TAGS; i++)
        if (TAGS[i].info.tag == tag)
            return &TAGS[i];
    return NULL;
}

/* PatientName in a query at study level or below: the studies' copy of the
 * patient's name (0046_study_patient_name.sql), so that a walk of studies in
 * id order ("Limit 100") does not look up each study's patient. Same values as
 * the patients table's (the copy is taken from it). */
static const tag_def PATIENT_NAME_IN_STUDIES = {
    {TS_TAG(0x0010, 0x0010), "PatientName", TS_LEVEL_STUDY, "PN"},
    "st.patient_name",
    "st.patient_name_norm",
    MATCH_PLAIN};

/* The definition of `tag` for a query at `level`. */
static const tag_def *find_def_at(uint32_t tag, ts_level level)
{
    const tag_def *d = find_def(tag);
    if (d && level >= TS_LEVEL_STUDY && tag == PATIENT_NAME_IN_STUDIES.info.tag)
        return &PATIENT_NAME_IN_STUDIES;
    return d;
}

static const item_def *find_item_def(uint32_t sequence, uint32_t tag)
{
    for (size_t i = 0; i < sizeof(ITEM_TAGS) / sizeof(ITEM_TAGS[0]); i++)
        if (ITEM_TAGS[i].sequence == sequence && ITEM_TAGS[i].def.info.tag == tag)
            return &ITEM_TAGS[i];
    return NULL;
}

const query_tag_info *query_item_tag_lookup(uint32_t sequence, uint32_t tag)
{
    const item_def *d = find_item_def(sequence, tag);
    return d ? &d->def.info : NULL;
}

const query_tag_info *query_tag_lookup(uint32_t tag)
{
    const tag_def *d = find_def(tag);
    return d ? &d->info : NULL;
}

size_t query_tag_count(void)
{
    return N_TAGS;
}

const query_tag_info *query_tag_at(size_t i)
{
    return i < N_TAGS ? &TAGS[i].info : NULL;
}

/* ---- a growing string ------------------------------------------------------ */

typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->s ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            abort();
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        b->s = realloc(b->s, cap);
        if (!b->s)
            abort();
        b->cap = cap;
    }
}

/* ---- values ------------------------------------------------------------------ */

char *query_like_pattern(const char *value)
{
    size_t n = strlen(value);
    char *out = malloc(2 * n + 1);
    if (!out)
        abort();
    char *o = out;
    for (const char *p = value; *p; p++) {
        switch (*p) {
        case '*':
            *o++ = '%';
            break;
        case '?':
            *o++ = '_';
            break;
        case '%':
        case '_':
        case '\\':
            *o++ = '\\';
            *o++ = *p;
            break;
        default:
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int two(const char *s)
{
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* Month and day of a DA (YYYYMMDD), or hour, minute, second of a TM (HH[MM[SS]]),
 * within their ranges; digits checked by the caller. */
static bool date_in_range(const char *s)
{
    return two(s + 4) >= 1 && two(s + 4) <= 12 && two(s + 6) >= 1 && two(s + 6) <= 31;
}

static bool time_in_range(const char *s, size_t digits)
{
    return two(s) < 24 && (digits < 4 || two(s + 2) < 60) && (digits < 6 || two(s + 4) < 61);
}

/* One DA, TM or DT value (no range), as PS3.5 writes them. */
static bool valid_datetime(const char *vr, const char *s, size_t n)
{
    if (strcmp(vr, "DA") == 0)
        return n == 8 && all_digits(s, n) && date_in_range(s);
    size_t digits = 0;
    while (digits < n && isdigit((unsigned char)s[digits]))
        digits++;
    size_t rest = n - digits;
    const char *r = s + digits;
    if (strcmp(vr, "TM") == 0) {
        if (digits < 2 || digits > 6 || digits % 2 || !time_in_range(s, digits))
            return false;
        if (rest == 0)
            return true;
        return digits == 6 && r[0] == '.' && rest >= 2 && rest <= 7 && all_digits(r + 1, rest - 1);
    }
    /* DT: YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX] */
    if (digits < 4 || digits > 14 || digits % 2)
        return false;
    if (digits >= 8 && !date_in_range(s))
        return false;
    if (digits >= 10 && !time_in_range(s + 8, digits - 8))
        return false;
    if (rest && r[0] == '.') {
        if (digits != 14)
            return false;
        size_t f = 1;
        while (f < rest && isdigit((unsigned char)r[f]))
            f++;
        if (f < 2 || f > 7)
            return false;
        r += f;
        rest -= f;
    }
    if (rest == 0)
        return true;
    return rest == 5 && (r[0] == '+' || r[0] == '-') && all_digits(r + 1, 4);
}

static bool is_datetime_vr(const char *vr)
{
    return strcmp(vr, "DA") == 0 || strcmp(vr, "TM") == 0 || strcmp(vr, "DT") == 0;
}

typedef struct builder {
    sbuf where;
    char **params;
    int nparams;
    bool index_only; /* query_sql.no_seqscan */
} builder;

static int add_param(builder *b, const char *value, ts_err *err)
{
    if (b->nparams >= QUERY_MAX_PARAMS)
        return ts_err_set(err, TS_EINVAL, "too many matching keys");
    b->params = realloc(b->params, sizeof(char *) * (size_t)(b->nparams + 1));
    if (!b->params)
        abort();
    b->params[b->nparams++] = xstrdup(value);
    return b->nparams;
}

/* Whether a key's value is compared without case. Under QUERY_CASE_FOLD_TEXT
 * a value made only of ASCII characters that are not letters, with no '?',
 * matches the same values folded or not (folding changes letters only, and
 * '*' takes any length a folded letter has: 'ß' folds to 'SS'), so it is
 * compared as it is and the plain index serves: UIDs, numbers, most ids. */
static bool folds(const tag_def *d, query_case cm, const char *value)
{
    switch (cm) {
    case QUERY_CASE_EXACT:
        return false;
    case QUERY_CASE_FOLD_PN:
        return strcmp(d->info.vr, "PN") == 0;
    case QUERY_CASE_FOLD_TEXT:
        for (const unsigned char *p = (const unsigned char *)value; *p; p++)
            if (*p >= 0x80 || isalpha(*p) || *p == '?')
                return true;
        return false;
    }
    return false;
}

/* Adds the condition of one key with a non-empty value to b->where. */
static int add_condition(builder *b, const tag_def *d, const char *value, query_case cm,
                         ts_err *err)
{
    const char *vr = d->info.vr;
    bool wildcard = strpbrk(value, "*?") != NULL;
    bool list = strchr(value, '\\') != NULL;
    /* folded with Unicode's case rules on both sides (tessera_fold, migration
     * 0008): accents are kept */
    bool fold = folds(d, cm, value);
    const char *fold_open = fold ? "tessera_fold(" : "";
    const char *fold_close = fold ? ")" : "";
    int n;

    /* "*" alone (or "**"...) matches everything, empty values included. */
    if (value[strspn(value, "*")] == '\0')
        return 0;

    if (d->kind == MATCH_NONE)
        return 0; /* return keys only: a value is ignored */

    if (d->kind == MATCH_MODALITIES) {
        if ((n = add_param(b, value, err)) < 0)
            return n;
        if (wildcard) {
            char *pat = query_like_pattern(value);
            free(b->params[n - 1]);
            b->params[n - 1] = pat;
            sb_add(&b->where,
                   " AND EXISTS (SELECT 1 FROM unnest(st.modalities_in_study) m"
                   " WHERE %sm%s LIKE %s$%d%s)",
                   fold_open, fold_close, fold_open, n, fold_close);
        } else if (fold) {
            sb_add(&b->where,
                   " AND EXISTS (SELECT 1 FROM unnest(st.modalities_in_study) m"
                   " WHERE tessera_fold(m) = ANY (string_to_array(tessera_fold($%d), chr(92))))",
                   n);
        } else {
            sb_add(&b->where, " AND st.modalities_in_study && string_to_array($%d, chr(92))", n);
        }
        return 0;
    }

    if (is_datetime_vr(vr)) {
        if (list || wildcard)
            return ts_err_set(err, TS_EINVAL, "%s: '%s' is not a %s value or range",
                              d->info.keyword, value, vr);
        const char *dash = strchr(value, '-');
        /* a DT value may end with a negative offset (-HHMM): that '-' is no range */
        if (strcmp(vr, "DT") == 0 && dash && dash != value) {
            size_t len = strlen(value);
            if ((size_t)(dash - value) == len - 5 && strchr(dash + 1, '-') == NULL &&
                valid_datetime(vr, value, len))
                dash = NULL; /* a single value with a negative offset */
        }
        if (!dash) {
            if (!valid_datetime(vr, value, strlen(value)))
                return ts_err_set(err, TS_EINVAL, "%s: '%s' is not a valid %s value",
                                  d->info.keyword, value, vr);
            if ((n = add_param(b, value, err)) < 0)
                return n;
            sb_add(&b->where, " AND %s = $%d", d->expr, n);
            return 0;
        }
        size_t lo_len = (size_t)(dash - value);
        const char *hi = dash + 1;
        size_t hi_len = strlen(hi);
        if ((lo_len == 0 && hi_len == 0) || (lo_len && !valid_datetime(vr, value, lo_len)) ||
            (hi_len && !valid_datetime(vr, hi, hi_len)))
            return ts_err_set(err, TS_EINVAL, "%s: '%s' is not a valid %s range", d->info.keyword,
                              value, vr);
        if (lo_len) {
            char lo[64];
            snprintf(lo, sizeof(lo), "%.*s", (int)lo_len, value);
            if ((n = add_param(b, lo, err)) < 0)
                return n;
            sb_add(&b->where, " AND %s >= $%d", d->expr, n);
        }
        if (hi_len) {
            /* The upper end includes every value it is the start of (PS3.4
             * C.2.2.2.5: "-1015" reaches 10:15:59.999999, "-2020" the end of
             * 2020): compared as text, so it is padded with nines to full
             * precision. */
            char upper[64];
            const char *full = strcmp(vr, "TM") == 0 ? "999999.999999" : "99999999999999.999999";
            size_t int_digits = strcmp(vr, "TM") == 0 ? 6 : 14;
            const char *dot = memchr(hi, '.', hi_len);
            if (strcmp(vr, "DA") == 0)
                snprintf(upper, sizeof(upper), "%s", hi);
            else if (!dot && hi_len <= int_digits)
                snprintf(upper, sizeof(upper), "%s%s", hi, full + hi_len);
            else if (dot && (size_t)(dot - hi) == int_digits && hi_len - int_digits - 1 <= 6)
                snprintf(upper, sizeof(upper), "%s%.*s", hi, (int)(6 - (hi_len - int_digits - 1)),
                         "999999");
            else
                snprintf(upper, sizeof(upper), "%s", hi); /* e.g. a DT with an offset */
            if ((n = add_param(b, upper, err)) < 0)
                return n;
            sb_add(&b->where, " AND %s <= $%d", d->expr, n);
        }
        return 0;
    }

    /* the stored column of folded values, or the expression of the folding
     * (that the indexes of migration 0009 are built on) */
    const char *col = d->expr;
    char folded[256];
    if (fold) {
        if (d->norm)
            col = d->norm;
        else {
            snprintf(folded, sizeof(folded), "tessera_fold(%s)", d->expr);
            col = folded;
        }
    }

    if (list) {
        /* UID list (and, by extension, a list of values for any VR): any of them */
        if (wildcard)
            return ts_err_set(err, TS_EINVAL, "%s: a list of values cannot hold wildcards",
                              d->info.keyword);
        if ((n = add_param(b, value, err)) < 0)
            return n;
        sb_add(&b->where, " AND %s = ANY (string_to_array(%s$%d%s, chr(92)))", col, fold_open, n,
               fold_close);
        return 0;
    }
    if (wildcard) {
        char *pat = query_like_pattern(value);
        n = add_param(b, pat, err);
        free(pat);
        if (n < 0)
            return n;
        sb_add(&b->where, " AND %s LIKE %s$%d%s", col, fold_open, n, fold_close);
        return 0;
    }
    if ((n = add_param(b, value, err)) < 0)
        return n;
    sb_add(&b->where, " AND %s = %s$%d%s", col, fold_open, n, fold_close);
    return 0;
}

/* The sequence key k is an item attribute of, or 0. */
#define SEQ_OF(spec, k) ((spec)->key_sequences ? (spec)->key_sequences[k] : 0u)

/* The keys in sequence items: per sequence, one EXISTS over its stored items
 * with every item key's condition on the same item (PS3.4 C.2.2.2.6: the
 * sequence matches when one item matches all of them). Universal values
 * only: no condition. Keys of an unknown item attribute are ignored, as
 * unknown top-level keys are. */
static int add_item_conditions(builder *b, const query_spec *spec, ts_err *err)
{
    for (size_t k = 0; k < spec->nkeys; k++) {
        uint32_t seq = SEQ_OF(spec, k);
        bool first = true;
        for (size_t j = 0; j < k && first; j++)
            first = SEQ_OF(spec, j) != seq;
        if (!seq || !first)
            continue;
        /* the conditions of this sequence's keys, written to a buffer of their own */
        sbuf outer = b->where;
        b->where = (sbuf){0};
        sb_add(&b->where, "%s", "");
        const char *items = NULL;
        int rc = 0;
        for (size_t j = k; j < spec->nkeys && rc == 0; j++) {
            const query_key *key = &spec->keys[j];
            const item_def *it = SEQ_OF(spec, j) == seq ? find_item_def(seq, key->tag) : NULL;
            if (!it || it->def.info.level > spec->level || !key->value || !*key->value)
                continue;
            items = it->items;
            rc = add_condition(b, &it->def, key->value, spec->case_matching, err);
        }
        sbuf inner = b->where;
        b->where = outer;
        if (rc == 0 && items && inner.len)
            sb_add(&b->where,
                   " AND EXISTS (SELECT 1 FROM jsonb_array_elements(%s) it WHERE true%s)", items,
                   inner.s);
        free(inner.s);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The per-level table and alias of each level; r<alias> is its resources row. */
static const char *const LEVEL_TABLE[] = {"patients", "studies", "series", "instances"};
static const char *const LEVEL_ALIAS[] = {"pa", "st", "se", "i"};

/* FROM the query level's tables up to the highest level a key needs: every
 * level more is two more relations for the planner, whose time grows fast with
 * them (8 relations: ~15 ms of planning, 5: ~2 ms). */
static void add_from(sbuf *b, ts_level level, ts_level top)
{
    sb_add(b, " FROM %s %s JOIN resources r%s ON r%s.id = %s.resource_id", LEVEL_TABLE[level],
           LEVEL_ALIAS[level], LEVEL_ALIAS[level], LEVEL_ALIAS[level], LEVEL_ALIAS[level]);
    for (int l = (int)level - 1; l >= (int)top; l--) {
        const char *a = LEVEL_ALIAS[l];
        sb_add(b, " JOIN %s %s ON %s.resource_id = r%s.parent_id", LEVEL_TABLE[l], a, a,
               LEVEL_ALIAS[l + 1]);
        if (l > (int)top)
            sb_add(b, " JOIN resources r%s ON r%s.id = %s.resource_id", a, a, a);
        else
            /* the highest level's resources row would only give its id (no level
             * above to reach): the planner joined it by a merge join over the
             * whole resources key when the matched patients' ids were far apart
             * (bench/scale: 240 ms for 395 studies at 1M instances instead of 3) */
            sb_add(b, " CROSS JOIN LATERAL (SELECT %s.resource_id AS id) r%s", a, a);
    }
}

static const char *const RES_ALIAS[] = {"rpa", "rst", "rse", "ri"};

static bool label_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 64 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* The labels as one text[] parameter ("{a,b}": valid names need no quoting). */
static int add_label_array(builder *b, const char *const *labels, size_t n, ts_err *err)
{
    sbuf a = {0};
    sb_add(&a, "{");
    for (size_t i = 0; i < n; i++) {
        if (!label_ok(labels[i])) {
            free(a.s);
            return ts_err_set(err, TS_EINVAL, "invalid label \"%.64s\"", labels[i]);
        }
        sb_add(&a, "%s%s", i ? "," : "", labels[i]);
    }
    sb_add(&a, "}");
    int n_param = add_param(b, a.s, err);
    free(a.s);
    return n_param;
}

/* Labels of the matched resource (Orthanc 1.12's "Labels"/"LabelsConstraint")
 * and the caller's label-scoped visibility. Each is an EXISTS on `labels`,
 * which its (label, resource_id) index answers as it answers a tag column. */
static int add_label_conditions(builder *b, const query_spec *spec, ts_err *err)
{
    const char *r = RES_ALIAS[spec->level];
    int n;
    if (spec->nlabels > 0 && spec->labels_constraint == QUERY_LABELS_ALL) {
        /* one semi-join per label: each can start from the label's index entries */
        for (size_t i = 0; i < spec->nlabels; i++) {
            if ((n = add_label_array(b, &spec->labels[i], 1, err)) < 0)
                return n;
            sb_add(&b->where,
                   " AND EXISTS (SELECT 1 FROM labels lb WHERE lb.resource_id = %s.id"
                   " AND lb.label = ANY ($%d::text[]))",
                   r, n);
        }
    } else if (spec->nlabels > 0) {
        if ((n = add_label_array(b, spec->labels, spec->nlabels, err)) < 0)
            return n;
        switch (spec->labels_constraint) {
        case QUERY_LABELS_ALL:
        case QUERY_LABELS_ANY:
            sb_add(&b->where,
                   " AND EXISTS (SELECT 1 FROM labels lb WHERE lb.resource_id = %s.id"
                   " AND lb.label = ANY ($%d::text[]))",
                   r, n);
            break;
        case QUERY_LABELS_NONE:
            sb_add(&b->where,
                   " AND NOT EXISTS (SELECT 1 FROM labels lb WHERE lb.resource_id = %s.id"
                   " AND lb.label = ANY ($%d::text[]))",
                   r, n);
            break;
        default:
            return ts_err_set(err, TS_EINVAL, "unknown labels constraint %d",
                              (int)spec->labels_constraint);
        }
    }
    if (spec->restrict_to_labels) {
        /* nothing else to match: no join order to choose, see below */
        bool alone = strcmp(b->where.s, " WHERE true") == 0;
        if ((n = add_label_array(b, spec->visible, spec->nvisible, err)) < 0)
            return n;
        /* visibility is decided by the study (docs/design.md, "Labels and access") */
        if (spec->level == TS_LEVEL_PATIENT) {
            /* every one of its studies (db/functions/labels.sql says why) */
            sb_add(&b->where, " AND tessera_patient_visible(rpa.id, $%d::text[])", n);
        } else if (spec->level == TS_LEVEL_STUDY) {
            /* the study's labels on the row the find reads anyway (0048): a
             * test per row, not a probe into labels per answer; for a caller
             * whose labels are few in the archive, the planner starts from
             * their GIN index instead (docs/benchmarks.md) */
            sb_add(&b->where, " AND rst.labels && $%d::text[]", n);
        } else if (alone) {
            /* The caller's labels are the only condition: the visible studies'
             * ids are read once from the label index (an InitPlan) and the
             * resources are fetched by them, in id order. A semi-join answers
             * the same but adds a relation to the join search, which cost more
             * than running the statement (bench/auth-overhead: 27% of
             * /tools/find's req/s, three quarters of it PostgreSQL's
             * planning). With other conditions the planner must be able to
             * start from them instead (it takes an InitPlan's array for 10
             * rows, whatever a label holds), so those keep the semi-join. */
            static const char *const fmt[] = {
                [TS_LEVEL_SERIES] = " AND rse.parent_id = ANY (ARRAY(SELECT lv.resource_id FROM"
                                    " labels lv WHERE lv.label = ANY ($%d::text[])))",
                [TS_LEVEL_INSTANCE] =
                    " AND ri.parent_id = ANY (ARRAY(SELECT vs.id FROM labels lv JOIN resources vs"
                    " ON vs.parent_id = lv.resource_id WHERE lv.label = ANY ($%d::text[])))",
            };
            sb_add(&b->where, fmt[spec->level], n);
            /* The planner takes that array for 10 ids: on a small table it
             * then prefers a sequential scan that compares every row with
             * every visible id (1,000 studies granted: 4M comparisons, half
             * the time of a C-FIND answering them all, bench/auth-overhead).
             * The ids are always best fetched through the index, at any size. */
            b->index_only = true;
        } else if (spec->level == TS_LEVEL_SERIES) {
            sb_add(&b->where,
                   " AND EXISTS (SELECT 1 FROM labels lv WHERE lv.resource_id = rse.parent_id"
                   " AND lv.label = ANY ($%d::text[]))",
                   n);
        } else {
            sb_add(&b->where,
                   " AND EXISTS (SELECT 1 FROM resources vs JOIN labels lv ON lv.resource_id ="
                   " vs.parent_id WHERE vs.id = ri.parent_id AND lv.label = ANY ($%d::text[]))",
                   n);
        }
    }
    return 0;
}

int query_build(const query_spec *spec, query_sql *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    builder b = {0};
    sbuf sel = {0};
    int rc = 0;
    if ((int)spec->level < TS_LEVEL_PATIENT || spec->level > TS_LEVEL_INSTANCE) {
        rc = ts_err_set(err, TS_EINVAL, "unknown query level %d", (int)spec->level);
        goto fail;
    }
    if (spec->limit < 0 || spec->since < 0) {
        rc = ts_err_set(err, TS_EINVAL, "negative limit or offset");
        goto fail;
    }
    const char *r = RES_ALIAS[spec->level];
    out->key_col = malloc(sizeof(int) * (spec->nkeys ? spec->nkeys : 1));
    if (!out->key_col)
        abort();
    sb_add(&sel, "SELECT %s.public_id", r);
    out->ncols = 1;
    sb_add(&b.where, " WHERE true");
    for (size_t k = 0; k < spec->nkeys; k++) {
        const query_key *key = &spec->keys[k];
        out->key_col[k] = -1;
        if (SEQ_OF(spec, k))
            continue; /* matched below, per sequence */
        const tag_def *d = find_def_at(key->tag, spec->level);
        /* keys of a lower level than the query's are neither matched nor returned */
        if (!d || d->info.level > spec->level)
            continue;
        /* the same tag twice: one column */
        for (size_t j = 0; j < k; j++)
            if (spec->keys[j].tag == key->tag && out->key_col[j] >= 0)
                out->key_col[k] = out->key_col[j];
        if (out->key_col[k] < 0) {
            sb_add(&sel, ", %s", d->expr);
            out->key_col[k] = out->ncols++;
        }
        const char *v = key->value ? key->value : "";
        if (*v && (rc = add_condition(&b, d, v, spec->case_matching, err)) < 0)
            goto fail;
    }
    if ((rc = add_item_conditions(&b, spec, err)) < 0)
        goto fail;
    /* Nothing of the level's own table is read or matched (the UI's unfiltered
     * list, or the caller's labels alone): the resources rows answer, in id
     * order from their (level, id) index, without a join per answer
     * (bench/auth-overhead: /tools/find of 1,000 studies). Not with Labels:
     * PostgreSQL estimates their EXISTS far too selective, and without the
     * studies' ordered scan to start from it sorted every labelled study
     * (300k studies, a label on half, LIMIT 10001: 490 ms, 87 ms joined). */
    bool ids_only = out->ncols == 1 && spec->nlabels == 0 && strcmp(b.where.s, " WHERE true") == 0;
    if ((rc = add_label_conditions(&b, spec, err)) < 0)
        goto fail;
    if (ids_only)
        sb_add(&b.where, " AND %s.level = %d", r, (int)spec->level);
    out->file_col = -1;
    if (spec->with_file && spec->level == TS_LEVEL_INSTANCE) {
        sb_add(&sel, ", (SELECT a.uuid::text FROM attachments a"
                     " WHERE a.resource_id = ri.id AND a.content_type = 1)");
        out->file_col = out->ncols++;
    }
    ts_level top = spec->level;
    for (size_t k = 0; k < spec->nkeys; k++) {
        const query_key *key = &spec->keys[k];
        uint32_t seq = SEQ_OF(spec, k);
        const item_def *it = seq ? find_item_def(seq, key->tag) : NULL;
        const tag_def *d = seq ? (it ? &it->def : NULL) : find_def_at(key->tag, spec->level);
        if (d && d->info.level < top && d->info.level <= spec->level)
            top = d->info.level;
    }
    if (ids_only)
        sb_add(&sel, " FROM resources %s", r);
    else
        add_from(&sel, spec->level, top);
    sb_add(&sel, "%s ORDER BY %s.id", b.where.s, r);
    if (spec->limit > 0)
        sb_add(&sel, " LIMIT %ld", spec->limit + 1);
    if (spec->since > 0)
        sb_add(&sel, " OFFSET %ld", spec->since);
    out->sql = sel.s;
    out->params = b.params;
    out->nparams = b.nparams;
    out->no_seqscan = b.index_only;
    free(b.where.s);
    return 0;
fail:
    free(sel.s);
    free(b.where.s);
    for (int i = 0; i < b.nparams; i++)
        free(b.params[i]);
    free(b.params);
    free(out->key_col);
    memset(out, 0, sizeof(*out));
    return rc;
}

void query_sql_clear(query_sql *q)
{
    if (!q)
        return;
    free(q->sql);
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->key_col);
    memset(q, 0, sizeof(*q));
}

/* ---- running -------------------------------------------------------------------- */

typedef struct run_arg {
    const query_sql *q;
    PGresult *res;
} run_arg;

static int run_txn(ts_db *db, void *arg, ts_err *err)
{
    run_arg *a = arg;
    if (a->res) { /* a replay */
        PQclear(a->res);
        a->res = NULL;
    }
    /* No merge joins: the planner merges a few matched parents with the
     * resources index assuming it can stop early, but the matched ids are spread
     * over the whole key range (a patient's id is as new as its first instance),
     * so the merge read the whole index: 150-300 ms at 1M instances for a name
     * prefix with 400 studies, 1-3 ms with nested loops (bench/scale). No hash
     * joins either: at 10M instances the planner, taking ANALYZE's estimate of
     * 79 children per parent (a sample sees few of the 1M distinct parents),
     * hashed all 190k studies to join 3,954 matches: 150 ms, growing with the
     * archive; nested loops on the keys: 35 ms, growing with the matches. */
    int rc = ts_db_exec_sql(db,
                            a->q->no_seqscan ? "SET LOCAL enable_mergejoin = off;"
                                               " SET LOCAL enable_hashjoin = off;"
                                               " SET LOCAL enable_seqscan = off"
                                             : "SET LOCAL enable_mergejoin = off;"
                                               " SET LOCAL enable_hashjoin = off",
                            err);
    if (rc)
        return rc;
    return ts_db_exec_params(db, a->q->sql, a->q->nparams, (const char *const *)a->q->params,
                             &a->res, err);
}

int query_run(ts_db_pool *pool, const query_spec *spec, query_result *out, ts_err *err)
{
    memset(out, 0, sizeof(*out));
    int rc = query_build(spec, &out->q, err);
    if (rc)
        return rc;
    run_arg a = {&out->q, NULL};
    rc = ts_db_transaction(pool, TS_DB_READ, run_txn, &a, err);
    if (rc) {
        if (a.res)
            PQclear(a.res);
        goto fail;
    }
    out->res = a.res;
    out->nrows = PQntuples(a.res);
    if (spec->limit > 0 && out->nrows > spec->limit) {
        out->nrows = (int)spec->limit;
        out->truncated = true;
    }
    return 0;
fail:
    query_result_clear(out);
    return rc;
}

int query_retrieve_run(ts_db_pool *pool, ts_level level, const query_key *keys, size_t nkeys,
                       query_case case_matching, query_result *out, ts_err *err)
{
    return query_retrieve_run_visible(pool, level, keys, nkeys, case_matching, false, NULL, 0, out,
                                      err);
}

int query_retrieve_run_visible(ts_db_pool *pool, ts_level level, const query_key *keys,
                               size_t nkeys, query_case case_matching, bool restrict_to_labels,
                               const char *const *visible, size_t nvisible, query_result *out,
                               ts_err *err)
{
    /* the key that names one resource of each level */
    static const uint32_t unique_key[] = {TS_TAG_PATIENT_ID, TS_TAG_STUDY_INSTANCE_UID,
                                          TS_TAG_SERIES_INSTANCE_UID, TS_TAG_SOP_INSTANCE_UID};
    static const char *const level_names[] = {"PATIENT", "STUDY", "SERIES", "IMAGE"};
    memset(out, 0, sizeof(*out));
    bool has_unique = false;
    for (size_t i = 0; i < nkeys; i++) {
        if (keys[i].tag == unique_key[level] && *keys[i].value)
            has_unique = true;
        /* Orthanc also retrieves a study by its AccessionNumber alone (some
         * workstations send that); PS3.4 C.4.2.2.1 asks for the unique key, so
         * this is a tolerance, and a universal or wildcard value still is no key. */
        if (level == TS_LEVEL_STUDY && keys[i].tag == TS_TAG(0x0008, 0x0050) && *keys[i].value &&
            !strpbrk(keys[i].value, "*?"))
            has_unique = true;
    }
    if (!has_unique)
        return ts_err_set(err, TS_EINVAL, "the unique key of level %s is missing",
                          level_names[level]);
    query_key *all = calloc(nkeys + 1, sizeof(*all));
    if (!all)
        abort();
    memcpy(all, keys, nkeys * sizeof(*all));
    all[nkeys] = (query_key){TS_TAG_SOP_INSTANCE_UID, ""};
    query_spec spec = {.level = TS_LEVEL_INSTANCE,
                       .keys = all,
                       .nkeys = nkeys + 1,
                       .case_matching = case_matching,
                       .with_file = true,
                       .restrict_to_labels = restrict_to_labels,
                       .visible = visible,
                       .nvisible = nvisible};
    int rc = query_run(pool, &spec, out, err);
    free(all);
    return rc;
}

const char *query_result_id(const query_result *r, int row)
{
    return PQgetvalue(r->res, row, 0);
}

const char *query_result_value(const query_result *r, int row, size_t key)
{
    int col = r->q.key_col[key];
    if (col < 0 || PQgetisnull(r->res, row, col))
        return "";
    return PQgetvalue(r->res, row, col);
}

const char *query_result_file(const query_result *r, int row)
{
    if (r->q.file_col < 0 || PQgetisnull(r->res, row, r->q.file_col))
        return "";
    return PQgetvalue(r->res, row, r->q.file_col);
}

void query_result_clear(query_result *r)
{
    if (!r)
        return;
    if (r->res)
        PQclear(r->res);
    query_sql_clear(&r->q);
    memset(r, 0, sizeof(*r));
}
