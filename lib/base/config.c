#include "base/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"

extern char **environ;

/* Every setting of every service. Keep in step with README.md ("Configuration"). */
static const ts_cfg_setting settings[] = {
    {"TESSERA_CONFIG_FILE", TS_CFG_STRING, "", 0, 0, NULL,
     "optional file of NAME=value lines, read before the environment"},
    {"TESSERA_LOG_LEVEL", TS_CFG_CHOICE, "info", 0, 0, "debug|info|warn|error", "log level"},
    {"TESSERA_DB_URL", TS_CFG_STRING, "dbname=tessera", 0, 0, NULL,
     "libpq connection string of the PostgreSQL index"},
    {"TESSERA_DB_READ_URL", TS_CFG_STRING, "", 0, 0, NULL,
     "libpq connection string of a read replica: query's matching and rest's reads run their "
     "read-only transactions there (over as many connections again), and may see the index a "
     "moment behind; empty: the primary"},
    {"TESSERA_DB_POOL_SIZE", TS_CFG_INT, "8", 1, 256, NULL,
     "database connections per process (one per worker thread)"},
    {"TESSERA_DB_MAX_RETRIES", TS_CFG_INT, "10", 0, 100, NULL,
     "replays of a transaction that failed with a serialization failure or deadlock "
     "(each waits 100 ms more plus jitter); then HTTP 503 / DICOM 0xA700"},
    {"TESSERA_DB_ISOLATION", TS_CFG_CHOICE, "read-committed", 0, 0,
     "read-committed|repeatable-read|serializable", "isolation level of write transactions"},
    {"TESSERA_DB_CONNECT_TIMEOUT", TS_CFG_INT, "5", 1, 600, NULL,
     "seconds to wait for a database connection"},
    {"TESSERA_REDIS_URL", TS_CFG_STRING, "redis://127.0.0.1:6379", 0, 0, NULL,
     "Redis server of the job registry (redis://host:port or unix:///path)"},
    {"TESSERA_STORAGE_DIR", TS_CFG_STRING, "./var/storage", 0, 0, NULL,
     "root of the storage area (shared by every service)"},
    {"TESSERA_STORAGE_PREPARE", TS_CFG_BOOL, "true", 0, 0, NULL,
     "ingest makes every aa/bb directory of the storage area at its first start (1.5 s, 270 MB "
     "on ext4) so that no write makes a directory"},
    {"TESSERA_DICOM_AET", TS_CFG_STRING, "TESSERA", 0, 0, NULL, "our DICOM AE title"},
    {"TESSERA_DICOM_PORT", TS_CFG_INT, "4242", 1, 65535, NULL, "DICOM port of ingest"},
    {"TESSERA_DICOM_MAX_ASSOCIATIONS", TS_CFG_INT, "16", 1, 1000, NULL,
     "concurrent DICOM associations per ingest process; more are rejected (transient)"},
    {"TESSERA_DICOM_CHECK_CALLED_AET", TS_CFG_BOOL, "false", 0, 0, NULL,
     "reject associations whose called AE title is not ours"},
    {"TESSERA_DICOM_REGISTERED_AES_ONLY", TS_CFG_BOOL, "false", 0, 0, NULL,
     "accept associations only from AE titles in the modalities table"},
    {"TESSERA_DICOM_TIMEOUT", TS_CFG_INT, "30", 1, 3600, NULL,
     "seconds of silence after which a DICOM association is dropped"},
    {"TESSERA_DICOM_MAX_PENDING", TS_CFG_INT, "64", 1, 10000, NULL,
     "DICOM connections whose association request has not arrived whole yet, per process; "
     "more are closed at once"},
    {"TESSERA_DICOM_MAX_PENDING_PER_PEER", TS_CFG_INT, "8", 1, 10000, NULL,
     "the same per peer IP address, so that one peer's idle connections cannot crowd out "
     "others"},
    {"TESSERA_DICOM_MAX_PDU", TS_CFG_INT, "65536", 4096, 131072, NULL,
     "maximum PDU length we receive"},
    {"TESSERA_OVERWRITE_INSTANCES", TS_CFG_BOOL, "false", 0, 0, NULL,
     "replace an instance that is already stored (Orthanc's OverwriteInstances)"},
    {"TESSERA_MAX_INSTANCE_SIZE", TS_CFG_INT, "1073741824", 1024, 17179869184L, NULL,
     "largest instance accepted, in bytes"},
    {"TESSERA_HTTP_PORT", TS_CFG_INT, "8042", 1, 65535, NULL, "HTTP port of rest"},
    {"TESSERA_HTTP_MAX_CONNECTIONS", TS_CFG_INT, "64", 1, 10000, NULL,
     "concurrent HTTP connections per rest process (one thread each)"},
    {"TESSERA_USER_METADATA", TS_CFG_STRING, "", 0, 0, NULL,
     "user metadata names and numbers, e.g. \"Comment=1024,Reviewer=1025\" (Orthanc's "
     "UserMetadata)"},
    {"TESSERA_USER_CONTENT_TYPES", TS_CFG_STRING, "", 0, 0, NULL,
     "user attachment names and numbers, e.g. \"report=1024\" (Orthanc's UserContentType)"},
    {"TESSERA_NAME", TS_CFG_STRING, "Tessera", 0, 0, NULL, "the Name in GET /system"},
    {"TESSERA_AUDIT", TS_CFG_BOOL, "true", 0, 0, NULL,
     "record every access to patient data in the audit trail (audit_log; always logged)"},
    {"TESSERA_AUDIT_QUEUE", TS_CFG_INT, "10000", 1, 1000000, NULL,
     "audit events kept in memory while PostgreSQL cannot take them (then the oldest go)"},
    {"TESSERA_AUDIT_RETENTION_DAYS", TS_CFG_INT, "365", 0, 36500, NULL,
     "days the deleter keeps audit rows (0: forever)"},
    {"TESSERA_STABLE_AGE", TS_CFG_INT, "60", 1, 86400, NULL,
     "seconds without a new instance after which a patient/study/series is stable"},
    {"TESSERA_INGEST_BUS_LISTEN", TS_CFG_STRING, "tcp://127.0.0.1:7410", 0, 0, NULL,
     "where ingest's REP socket (store) listens"},
    {"TESSERA_INGEST_BUS", TS_CFG_STRING, "127.0.0.1:7410", 0, 0, NULL,
     "host:port of ingest's store socket; every address of host is dialled"},
    {"TESSERA_EVENTS_LISTEN", TS_CFG_STRING, "tcp://127.0.0.1:7411", 0, 0, NULL,
     "where this service publishes change events (empty: do not publish)"},
    {"TESSERA_BUS_MAX_MESSAGE", TS_CFG_INT, "1100000000", 1024, 4294967295L, NULL,
     "largest message accepted on any bus socket, in bytes"},
    {"TESSERA_BUS_WORKERS", TS_CFG_INT, "4", 1, 256, NULL,
     "concurrent requests served on a bus socket"},
    {"TESSERA_BUS_TIMEOUT", TS_CFG_INT, "60", 1, 3600, NULL,
     "seconds a bus request waits for its reply"},
    {"TESSERA_BUS_RESOLVE_INTERVAL", TS_CFG_INT, "5", 1, 3600, NULL,
     "seconds between two resolutions of a service's host name"},
    {"TESSERA_METRICS_PORT", TS_CFG_INT, "0", 0, 65535, NULL,
     "port serving /metrics (Prometheus) and /health; 0: none"},
    {"TESSERA_HTTP_BIND", TS_CFG_STRING, "0.0.0.0", 0, 0, NULL,
     "address rest listens on (an IPv4 or IPv6 address)"},
    {"TESSERA_HTTP_AUTH", TS_CFG_CHOICE, "auto", 0, 0, "auto|on|off",
     "HTTP Basic authentication; auto: on unless TESSERA_HTTP_BIND is loopback"},
    {"TESSERA_HTTP_CORS_ORIGINS", TS_CFG_STRING, "", 0, 0, NULL,
     "origins whose pages may call /dicom-web/ and /wado (CORS), as scheme://host[:port] "
     "separated by commas, or * for any; empty: none"},
    {"TESSERA_UI_DIR", TS_CFG_STRING, "", 0, 0, NULL,
     "serve the web UI (/ui/) from this folder instead of the copy compiled into rest "
     "(development: edit ui/ and reload)"},
    {"TESSERA_VIEWER_DIR", TS_CFG_STRING, "", 0, 0, NULL,
     "serve the OHIF viewer made by scripts/fetch-viewer from this folder at /viewer/; "
     "empty: no viewer"},
    {"TESSERA_HTTP_USERS", TS_CFG_STRING, "", 0, 0, NULL,
     "REST users as user:password,user:password (prefer TESSERA_HTTP_USERS_FILE)"},
    {"TESSERA_HTTP_USERS_FILE", TS_CFG_STRING, "", 0, 0, NULL,
     "a file of REST users, one user:password per line (a compose secret)"},
    {"TESSERA_MALLOC_ARENAS", TS_CFG_INT, "4", 1, 64, NULL,
     "glibc malloc arenas of the process (M_ARENA_MAX): bounds RSS under many threads"},
    /* deleter */
    {"TESSERA_DELETER_BUS_LISTEN", TS_CFG_STRING, "tcp://127.0.0.1:7413", 0, 0, NULL,
     "where a deleter's PULL socket (nudges after deletions) listens"},
    {"TESSERA_DELETER_BUS", TS_CFG_STRING, "127.0.0.1:7413", 0, 0, NULL,
     "host:port of the deleters' nudge sockets (every address is dialled); empty: no nudges"},
    {"TESSERA_DELETER_BATCH", TS_CFG_INT, "500", 1, 100000, NULL,
     "files a deleter claims and removes per transaction (and removed resources whose rows it "
     "purges)"},
    {"TESSERA_DELETER_POLL_INTERVAL", TS_CFG_INT, "5", 1, 3600, NULL,
     "seconds between two looks at the deletion queue without a nudge"},
    {"TESSERA_DELETER_MAX_RATE", TS_CFG_INT, "0", 0, 1000000, NULL,
     "files removed per second by one deleter at most; 0: no limit"},
    {"TESSERA_STORE_INTENT_AGE", TS_CFG_INT, "60", 0, 86400, NULL,
     "seconds after which a deleter settles a stored file whose writer left no answer "
     "(removed unless a row refers to it)"},
    {"TESSERA_QUERY_DICOM_PORT", TS_CFG_INT, "4252", 0, 65535, NULL,
     "DICOM port of query (C-ECHO, C-FIND, C-MOVE, C-GET); 0: none"},
    {"TESSERA_QUERY_LIMIT", TS_CFG_INT, "10000", 1, 10000000, NULL,
     "most matches one C-FIND or find request returns (answers are held in memory)"},
    {"TESSERA_QUERY_CASE_SENSITIVE_PN", TS_CFG_BOOL, "false", 0, 0, NULL,
     "match person names case-sensitively (C-FIND; the bus request says for itself)"},
    {"TESSERA_QUERY_BUS_LISTEN", TS_CFG_STRING, "tcp://127.0.0.1:7412", 0, 0, NULL,
     "where query's REP socket (find) listens (empty: none)"},
    {"TESSERA_QUERY_BUS", TS_CFG_STRING, "127.0.0.1:7412", 0, 0, NULL,
     "host:port of query's find socket; every address of host is dialled; ingest relays "
     "C-FIND there and gets the instances of C-MOVE/C-GET from it (empty: ingest offers no "
     "Q/R)"},
    /* C-FIND SCU answers kept for /queries (in Redis) */
    {"TESSERA_QUERIES_TTL", TS_CFG_INT, "3600", 1, 604800, NULL,
     "seconds a /queries entry (a C-FIND's answers) is kept in Redis after its query"},
    {"TESSERA_QUERIES_HISTORY", TS_CFG_INT, "100", 1, 100000, NULL,
     "/queries entries kept for the whole cluster, oldest dropped first (Orthanc's "
     "QueryRetrieveSize)"},
    /* jobs */
    {"TESSERA_JOBS_WORKERS", TS_CFG_INT, "2", 1, 256, NULL,
     "jobs run at once by one jobs process (one thread each)"},
    {"TESSERA_JOBS_HISTORY", TS_CFG_INT, "100", 0, 1000000, NULL,
     "finished jobs kept in the registry for the whole cluster (Orthanc's JobsHistorySize)"},
    {"TESSERA_JOBS_LEASE", TS_CFG_INT, "10", 1, 3600, NULL,
     "seconds a running job's lease lasts unless renewed; then another worker takes the job over"},
    {"TESSERA_JOBS_ARCHIVE_MAX_RATE", TS_CFG_INT, "0", 0, 10000000, NULL,
     "KiB per second an Archive job writes at most (spare a busy disk); 0: no limit"},
};

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

static char *values[N_SETTINGS];

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
    free(values[idx]);
    values[idx] = strdup(v);
    if (!values[idx])
        abort();
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
    if (ts_log_level_parse(ts_config_str("TESSERA_LOG_LEVEL"), &lvl))
        ts_log_set_level(lvl);
    return 0;
}

static int must_find(const char *name)
{
    int idx = find_setting(name);
    if (idx < 0 || !values[idx]) {
        fprintf(stderr, "BUG: configuration %s is not a setting or not loaded\n", name);
        abort();
    }
    return idx;
}

const char *ts_config_str(const char *name)
{
    return values[must_find(name)];
}

long ts_config_int(const char *name)
{
    return strtol(values[must_find(name)], NULL, 10);
}

bool ts_config_bool(const char *name)
{
    bool b = false;
    parse_bool(values[must_find(name)], &b);
    return b;
}

void ts_config_print(FILE *out)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        fprintf(out, "%-34s %-24s %s\n", settings[i].name,
                values[i] ? values[i] : settings[i].default_value, settings[i].help);
}
