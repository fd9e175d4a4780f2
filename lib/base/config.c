#include "base/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"

extern char **environ;

/* The table, in ts_setting order (lib/base/settings.def). */
static const ts_cfg_setting settings[] = {
#define TS_SETTING(name, type, default_value, min, max, choices, help)                             \
    {#name, TS_CFG_##type, default_value, min, max, choices, help},
#include "base/settings.def"
#undef TS_SETTING
};

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))
_Static_assert(N_SETTINGS == TS_SETTING_COUNT, "settings.def expanded twice alike");

/* Each value as given, and parsed once at load for ts_cfg_int/ts_cfg_bool. */
static struct {
    char *text;
    long number;
    bool flag;
    ts_cfg_pair *pairs; /* names point into pairs_text */
    char *pairs_text;
    size_t npairs;
} values[N_SETTINGS];

const ts_cfg_setting *ts_config_settings(size_t *count)
{
    *count = N_SETTINGS;
    return settings;
}

static int find_setting(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strcmp(settings[i].name, name) == 0)
            return (int)i;
    return -1;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t len = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncasecmp(p, v, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

/* Splits "a=1,b=2" into pairs (out may be NULL: only checks). A name is not
 * empty and holds no '=' or ','; a number is an integer in min..max. */
static int parse_pairs(const ts_cfg_setting *s, const char *v, const char *source,
                       ts_cfg_pair **out, char **text_out, size_t *n_out, ts_err *err)
{
    char *text = strdup(v);
    if (!text)
        abort();
    size_t n = 0, cap = 0;
    ts_cfg_pair *pairs = NULL;
    int rc = 0;
    for (char *item = text; *item && rc == 0;) {
        char *comma = strchr(item, ',');
        if (comma)
            *comma = '\0';
        char *eq = strchr(item, '=');
        char *end = NULL;
        long number = 0;
        if (eq) {
            *eq = '\0';
            errno = 0;
            number = strtol(eq + 1, &end, 10);
        }
        if (!eq || eq == item || errno || end == eq + 1 || *end || number < s->min ||
            number > s->max) {
            rc = ts_err_set(err, TS_EINVAL,
                            "%s (%s): '%s' is not a list of name=number (numbers %ld..%ld)",
                            s->name, source, v, s->min, s->max);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 4;
            pairs = realloc(pairs, cap * sizeof(*pairs));
            if (!pairs)
                abort();
        }
        pairs[n++] = (ts_cfg_pair){item, number};
        item = comma ? comma + 1 : item + strlen(item);
    }
    if (rc || !out) {
        free(pairs);
        free(text);
        return rc;
    }
    *out = pairs;
    *text_out = text;
    *n_out = n;
    return 0;
}

static int validate(const ts_cfg_setting *s, const char *v, const char *source, ts_err *err)
{
    switch (s->type) {
    case TS_CFG_STRING:
        return 0;
    case TS_CFG_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end != '\0' || n < s->min || n > s->max)
            return ts_err_set(err, TS_EINVAL, "%s (%s): '%s' is not an integer between %ld and %ld",
                              s->name, source, v, s->min, s->max);
        return 0;
    }
    case TS_CFG_BOOL: {
        bool b;
        if (!parse_bool(v, &b))
            return ts_err_set(err, TS_EINVAL, "%s (%s): '%s' is not a boolean (true/false)",
                              s->name, source, v);
        return 0;
    }
    case TS_CFG_PAIRS:
        return parse_pairs(s, v, source, NULL, NULL, NULL, err);
    case TS_CFG_CHOICE:
        if (!choice_ok(s->choices, v))
            return ts_err_set(err, TS_EINVAL, "%s (%s): '%s' is not one of %s", s->name, source, v,
                              s->choices);
        return 0;
    }
    return 0;
}

static int set_value(int idx, const char *v, const char *source, ts_err *err)
{
    int rc = validate(&settings[idx], v, source, err);
    if (rc)
        return rc;
    free(values[idx].text);
    values[idx].text = strdup(v);
    if (!values[idx].text)
        abort();
    if (settings[idx].type == TS_CFG_INT)
        values[idx].number = strtol(v, NULL, 10);
    if (settings[idx].type == TS_CFG_BOOL)
        parse_bool(v, &values[idx].flag);
    if (settings[idx].type == TS_CFG_PAIRS) {
        free(values[idx].pairs);
        free(values[idx].pairs_text);
        parse_pairs(&settings[idx], v, source, &values[idx].pairs, &values[idx].pairs_text,
                    &values[idx].npairs, err);
    }
    return 0;
}

static const char *env_lookup(char **envp, const char *name)
{
    size_t len = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            return *e + len + 1;
    return NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        *--end = '\0';
    return s;
}

static int load_file(const char *path, ts_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return ts_err_set(err, TS_EINVAL, "TESSERA_CONFIG_FILE: cannot open %s: %m", path);
    char line[4096];
    int lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = ts_err_set(err, TS_EINVAL, "%s:%d: expected NAME=value", path, lineno);
            break;
        }
        *eq = '\0';
        char *name = trim(s);
        char *value = trim(eq + 1);
        int idx = find_setting(name);
        if (idx < 0) {
            rc = ts_err_set(err, TS_EINVAL, "%s:%d: unknown setting %s", path, lineno, name);
            break;
        }
        char source[300];
        snprintf(source, sizeof(source), "%s:%d", path, lineno);
        rc = set_value(idx, value, source, err);
        if (rc)
            break;
    }
    fclose(f);
    return rc;
}

/* Variables of scripts/ and tests/, not of the services: no warning for them. */
static bool is_script_variable(const char *name)
{
    static const char *const names[] = {
        "TESSERA_VAR_DIR",        "TESSERA_PG_PORT", "TESSERA_PG_FSYNC",    "TESSERA_BUILD_DIR",
        "TESSERA_ASAN_BUILD_DIR", "TESSERA_ROOT",    "TESSERA_REST_AGAINST"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return strncmp(name, "TESSERA_TEST", 12) == 0;
}

int ts_config_load(char **envp, ts_err *err)
{
    if (!envp)
        envp = environ;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        int rc = set_value((int)i, settings[i].default_value, "default", err);
        if (rc)
            return rc;
    }
    const char *file = env_lookup(envp, "TESSERA_CONFIG_FILE");
    if (file && *file) {
        int rc = load_file(file, err);
        if (rc)
            return rc;
    }
    /* A TESSERA_ variable that is not a setting is most likely a typo: say so. */
    for (char **e = envp; *e; e++) {
        if (strncmp(*e, "TESSERA_", 8) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char name[128];
        size_t n = (size_t)(eq - *e);
        if (n >= sizeof(name))
            n = sizeof(name) - 1;
        memcpy(name, *e, n);
        name[n] = '\0';
        int idx = find_setting(name);
        if (idx < 0) {
            if (!is_script_variable(name))
                ts_warn("unknown setting in the environment, ignored", "name=%s", name);
            continue;
        }
        int rc = set_value(idx, eq + 1, "environment", err);
        if (rc)
            return rc;
    }
    ts_log_level lvl;
    if (ts_log_level_parse(ts_cfg_str(TESSERA_LOG_LEVEL), &lvl))
        ts_log_set_level(lvl);
    return 0;
}

/* The value of s, which must be loaded and (unless any) of type want. */
static int must_be(ts_setting s, bool any, ts_cfg_type want)
{
    if ((unsigned)s >= N_SETTINGS || !values[s].text || (!any && settings[s].type != want)) {
        fprintf(stderr, "BUG: configuration %d is not loaded or not of the type asked\n", (int)s);
        abort();
    }
    return (int)s;
}

const char *ts_cfg_str(ts_setting s)
{
    return values[must_be(s, true, TS_CFG_STRING)].text;
}

long ts_cfg_int(ts_setting s)
{
    return values[must_be(s, false, TS_CFG_INT)].number;
}

bool ts_cfg_bool(ts_setting s)
{
    return values[must_be(s, false, TS_CFG_BOOL)].flag;
}

const ts_cfg_pair *ts_cfg_pairs(ts_setting s, size_t *n)
{
    int i = must_be(s, false, TS_CFG_PAIRS);
    *n = values[i].npairs;
    return values[i].pairs;
}

void ts_config_print(FILE *out)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        fprintf(out, "%-34s %-24s %s\n", settings[i].name,
                values[i].text ? values[i].text : settings[i].default_value, settings[i].help);
}
