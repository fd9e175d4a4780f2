/* Configuration as an operator meets it: defaults, a file of NAME=value lines,
 * the environment on top, and errors that name the setting to fix. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/config.h"
#include "base/log.h"

/* A configuration file with the given text; the caller unlinks path. */
static void write_file(char *path, size_t size, const char *text)
{
    snprintf(path, size, "/tmp/ts-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

/* Loads from a file with text and returns the result code; err filled. */
static int load_with_file(const char *text, char *const *extra_env, ts_err *err, char *path,
                          size_t psize)
{
    write_file(path, psize, text);
    char file_var[300];
    snprintf(file_var, sizeof(file_var), "TESSERA_CONFIG_FILE=%s", path);
    char *envp[16] = {file_var};
    size_t n = 1;
    for (size_t i = 0; extra_env && extra_env[i] && n < 15; i++)
        envp[n++] = extra_env[i];
    envp[n] = NULL;
    int rc = ts_config_load(envp, err);
    unlink(path);
    return rc;
}

static void test_defaults(void **state)
{
    char *envp[] = {NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), 0);
    assert_int_equal(ts_cfg_int(TESSERA_DICOM_PORT), 4242);
    assert_int_equal(ts_cfg_int(TESSERA_DB_POOL_SIZE), 8);
    assert_string_equal(ts_cfg_str(TESSERA_DICOM_AET), "TESSERA");
    assert_string_equal(ts_cfg_str(TESSERA_LOG_LEVEL), "info");
    assert_false(ts_cfg_bool(TESSERA_OVERWRITE_INSTANCES));
    assert_int_equal(ts_cfg_int(TESSERA_MAX_INSTANCE_SIZE), 1073741824L);
    assert_int_equal(ts_cfg_int(TESSERA_BUS_MAX_MESSAGE), 1100000000L);

    /* every setting has a value, and it is its default */
    size_t count = 0;
    const ts_cfg_setting *s = ts_config_settings(&count);
    assert_true(count > 10);
    for (size_t i = 0; i < count; i++) {
        assert_memory_equal(s[i].name, "TESSERA_", 8);
        assert_non_null(s[i].help);
        assert_true(s[i].help[0] != '\0');
        assert_string_equal(ts_cfg_str((ts_setting)i), s[i].default_value);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s[i].name, s[j].name);
    }
}

static void test_environment(void **state)
{
    char *envp[] = {"TESSERA_DICOM_PORT=11112",
                    "TESSERA_DICOM_AET=ARCHIVE",
                    "TESSERA_OVERWRITE_INSTANCES=yes",
                    "TESSERA_DB_ISOLATION=SERIALIZABLE",
                    "PATH=/usr/bin",
                    "TESSERA_DB_URL=host=db dbname=tessera",
                    NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), 0);
    assert_int_equal(ts_cfg_int(TESSERA_DICOM_PORT), 11112);
    assert_string_equal(ts_cfg_str(TESSERA_DICOM_AET), "ARCHIVE");
    assert_true(ts_cfg_bool(TESSERA_OVERWRITE_INSTANCES));
    assert_string_equal(ts_cfg_str(TESSERA_DB_ISOLATION), "SERIALIZABLE");
    /* only the first '=' separates name and value */
    assert_string_equal(ts_cfg_str(TESSERA_DB_URL), "host=db dbname=tessera");

    /* a later load starts from the defaults again */
    char *none[] = {NULL};
    assert_int_equal(ts_config_load(none, &err), 0);
    assert_int_equal(ts_cfg_int(TESSERA_DICOM_PORT), 4242);
    assert_false(ts_cfg_bool(TESSERA_OVERWRITE_INSTANCES));
}

static void test_booleans(void **state)
{
    static const char *const yes[] = {"1", "true", "TRUE", "yes", "On"};
    static const char *const no[] = {"0", "false", "No", "off"};
    char var[64];
    char *envp[] = {var, NULL};
    ts_err err = {0};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        snprintf(var, sizeof(var), "TESSERA_DICOM_CHECK_CALLED_AET=%s", yes[i]);
        assert_int_equal(ts_config_load(envp, &err), 0);
        assert_true(ts_cfg_bool(TESSERA_DICOM_CHECK_CALLED_AET));
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        snprintf(var, sizeof(var), "TESSERA_DICOM_CHECK_CALLED_AET=%s", no[i]);
        assert_int_equal(ts_config_load(envp, &err), 0);
        assert_false(ts_cfg_bool(TESSERA_DICOM_CHECK_CALLED_AET));
    }
}

static void test_file_parsing(void **state)
{
    char path[64];
    ts_err err = {0};
    const char *text = "# Tessera configuration\n"
                       "\n"
                       "   # an indented comment\n"
                       "TESSERA_DICOM_AET=FROMFILE\n"
                       "  TESSERA_DICOM_PORT =  1111  \n"
                       "TESSERA_DB_URL=host=db port=5433\r\n"
                       "\t\n"
                       "TESSERA_DICOM_TIMEOUT=90";
    assert_int_equal(load_with_file(text, NULL, &err, path, sizeof(path)), 0);
    assert_string_equal(ts_cfg_str(TESSERA_DICOM_AET), "FROMFILE");
    assert_int_equal(ts_cfg_int(TESSERA_DICOM_PORT), 1111);
    assert_string_equal(ts_cfg_str(TESSERA_DB_URL), "host=db port=5433");
    /* the last line needs no newline */
    assert_int_equal(ts_cfg_int(TESSERA_DICOM_TIMEOUT), 90);
    /* untouched settings keep their defaults */
    assert_int_equal(ts_cfg_int(TESSERA_DB_POOL_SIZE), 8);
}

static void test_environment_overrides_file(void **state)
{
    char path[64];
    ts_err err = {0};
    char *env[] = {"TESSERA_DICOM_PORT=2222", NULL};
    assert_int_equal(load_with_file("TESSERA_DICOM_PORT=1111\nTESSERA_DICOM_AET=FROMFILE\n", env,
                                    &err, path, sizeof(path)),
                     0);
    assert_int_equal(ts_cfg_int(TESSERA_DICOM_PORT), 2222);
    assert_string_equal(ts_cfg_str(TESSERA_DICOM_AET), "FROMFILE");
}

typedef struct {
    const char *var;
    const char *expect[3]; /* parts the message must hold */
} bad_case;

static void test_bad_values_from_environment(void **state)
{
    static const bad_case cases[] = {
        {"TESSERA_DICOM_PORT=abc", {"TESSERA_DICOM_PORT", "'abc'", "between 1 and 65535"}},
        {"TESSERA_DICOM_PORT=70000", {"TESSERA_DICOM_PORT", "'70000'", "between 1 and 65535"}},
        {"TESSERA_DICOM_PORT=0", {"TESSERA_DICOM_PORT", "between 1 and 65535", "environment"}},
        {"TESSERA_DICOM_PORT=", {"TESSERA_DICOM_PORT", "''", "not an integer"}},
        {"TESSERA_DICOM_PORT=12x", {"TESSERA_DICOM_PORT", "'12x'", "not an integer"}},
        {"TESSERA_DB_POOL_SIZE=99999999999999999999",
         {"TESSERA_DB_POOL_SIZE", "between 1 and 256", NULL}},
        {"TESSERA_DICOM_CHECK_CALLED_AET=maybe",
         {"TESSERA_DICOM_CHECK_CALLED_AET", "'maybe'", "not a boolean"}},
        {"TESSERA_LOG_LEVEL=verbose", {"TESSERA_LOG_LEVEL", "'verbose'", "debug|info|warn|error"}},
        {"TESSERA_DB_ISOLATION=snapshot",
         {"TESSERA_DB_ISOLATION", "'snapshot'", "read-committed|repeatable-read|serializable"}},
        {"TESSERA_USER_METADATA=Comment", {"TESSERA_USER_METADATA", "'Comment'", "name=number"}},
        {"TESSERA_USER_METADATA=Comment=12", {"TESSERA_USER_METADATA", "1024..65535", NULL}},
        {"TESSERA_USER_METADATA=Comment=1024,=1025",
         {"TESSERA_USER_METADATA", "name=number", NULL}},
        {"TESSERA_USER_CONTENT_TYPES=report=x", {"TESSERA_USER_CONTENT_TYPES", "'report=x'", NULL}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *envp[] = {(char *)cases[i].var, NULL};
        ts_err err = {0};
        int rc = ts_config_load(envp, &err);
        if (rc != TS_EINVAL)
            fail_msg("%s: expected an error, got %d", cases[i].var, rc);
        assert_int_equal(err.code, TS_EINVAL);
        for (int j = 0; j < 3 && cases[i].expect[j]; j++)
            assert_contains(err.msg, cases[i].expect[j]);
    }
}

static void test_bad_values_from_file(void **state)
{
    char path[64];
    char where[80];
    ts_err err = {0};

    assert_int_equal(load_with_file("# ok\nTESSERA_DICOM_AET=X\nTESSERA_DICOM_PORT=port\n", NULL,
                                    &err, path, sizeof(path)),
                     TS_EINVAL);
    snprintf(where, sizeof(where), "%s:3", path); /* the file and the line to fix */
    assert_contains(err.msg, "TESSERA_DICOM_PORT");
    assert_contains(err.msg, where);
    assert_contains(err.msg, "'port'");

    assert_int_equal(load_with_file("TESSERA_DB_POOL_SIZE=0\n", NULL, &err, path, sizeof(path)),
                     TS_EINVAL);
    assert_contains(err.msg, "TESSERA_DB_POOL_SIZE");
    assert_contains(err.msg, "between 1 and 256");

    assert_int_equal(
        load_with_file("TESSERA_OVERWRITE_INSTANCES=sometimes\n", NULL, &err, path, sizeof(path)),
        TS_EINVAL);
    assert_contains(err.msg, "TESSERA_OVERWRITE_INSTANCES");
    assert_contains(err.msg, "not a boolean");

    assert_int_equal(load_with_file("TESSERA_LOG_LEVEL=loud\n", NULL, &err, path, sizeof(path)),
                     TS_EINVAL);
    assert_contains(err.msg, "TESSERA_LOG_LEVEL");
    assert_contains(err.msg, "debug|info|warn|error");
}

static void test_unknown_setting_in_file(void **state)
{
    char path[64];
    char where[80];
    ts_err err = {0};
    assert_int_equal(load_with_file("TESSERA_DICOM_AET=X\n\nTESSERA_DICOM_PROT=4242\n", NULL, &err,
                                    path, sizeof(path)),
                     TS_EINVAL);
    snprintf(where, sizeof(where), "%s:3", path);
    assert_contains(err.msg, where);
    assert_contains(err.msg, "unknown setting TESSERA_DICOM_PROT");
}

static void test_line_without_equals(void **state)
{
    char path[64];
    ts_err err = {0};
    assert_int_equal(load_with_file("TESSERA_DICOM_PORT 4242\n", NULL, &err, path, sizeof(path)),
                     TS_EINVAL);
    assert_contains(err.msg, path);
    assert_contains(err.msg, "NAME=value");
}

static void test_missing_file(void **state)
{
    char *envp[] = {"TESSERA_CONFIG_FILE=/nonexistent/tessera.conf", NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), TS_EINVAL);
    assert_contains(err.msg, "TESSERA_CONFIG_FILE");
    assert_contains(err.msg, "/nonexistent/tessera.conf");
    assert_contains(err.msg, "No such file or directory");
}

/* A TESSERA_ variable that is no setting is a warning, not a stop: a typo must
 * be visible, but a stray variable must not keep a service from starting. */
static void test_unknown_environment_variable_warns(void **state)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(pipefd[1], 2);
    char *envp[] = {"TESSERA_DICOM_PROT=1", "TESSERA_TEST_DB_URL=x", NULL};
    ts_err err = {0};
    ts_log_set_level(TS_LOG_INFO);
    int rc = ts_config_load(envp, &err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(pipefd[1]);
    char out[4096];
    ssize_t n = read(pipefd[0], out, sizeof(out) - 1);
    close(pipefd[0]);
    out[n > 0 ? n : 0] = '\0';

    assert_int_equal(rc, 0);
    assert_contains(out, "level=warn");
    assert_contains(out, "name=TESSERA_DICOM_PROT");
    /* variables of the test harness are not settings and not typos */
    assert_null(strstr(out, "TESSERA_TEST_DB_URL"));
}

static void test_log_level_applied(void **state)
{
    char *envp[] = {"TESSERA_LOG_LEVEL=error", NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), 0);
    assert_false(ts_log_enabled(TS_LOG_WARN));
    assert_true(ts_log_enabled(TS_LOG_ERROR));
    char *debug[] = {"TESSERA_LOG_LEVEL=DEBUG", NULL};
    assert_int_equal(ts_config_load(debug, &err), 0);
    assert_true(ts_log_enabled(TS_LOG_DEBUG));
    ts_log_set_level(TS_LOG_INFO);
}

/* A name=number list is split once, at load: what the REST routes read. */
static void test_pairs(void **state)
{
    char *envp[] = {"TESSERA_USER_METADATA=Comment=1024,Reviewer=1025", NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), 0);
    size_t n = 0;
    const ts_cfg_pair *p = ts_cfg_pairs(TESSERA_USER_METADATA, &n);
    assert_int_equal(n, 2);
    assert_string_equal(p[0].name, "Comment");
    assert_int_equal(p[0].number, 1024);
    assert_string_equal(p[1].name, "Reviewer");
    assert_int_equal(p[1].number, 1025);
    assert_string_equal(ts_cfg_str(TESSERA_USER_METADATA), "Comment=1024,Reviewer=1025");
    ts_cfg_pairs(TESSERA_USER_CONTENT_TYPES, &n);
    assert_int_equal(n, 0); /* default: empty */

    /* a reload replaces the list */
    char *again[] = {"TESSERA_USER_METADATA=Other=2000", NULL};
    assert_int_equal(ts_config_load(again, &err), 0);
    p = ts_cfg_pairs(TESSERA_USER_METADATA, &n);
    assert_int_equal(n, 1);
    assert_string_equal(p[0].name, "Other");
    assert_int_equal(p[0].number, 2000);
}

/* The compiled names and the table agree: the enum's value is the index of
 * the setting of that name, and the string API (kept for the transition)
 * reads the same value. */
static void test_compiled_names(void **state)
{
    char *envp[] = {"TESSERA_DICOM_PORT=11112", "TESSERA_STORAGE_PREPARE=off", NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), 0);
    size_t count = 0;
    const ts_cfg_setting *s = ts_config_settings(&count);
    assert_int_equal(count, TS_SETTING_COUNT);
    assert_string_equal(s[TESSERA_DICOM_PORT].name, "TESSERA_DICOM_PORT");
    assert_string_equal(s[TESSERA_JOBS_ARCHIVE_MAX_RATE].name, "TESSERA_JOBS_ARCHIVE_MAX_RATE");
    assert_string_equal(s[TESSERA_CONFIG_FILE].name, "TESSERA_CONFIG_FILE");
    assert_int_equal(ts_cfg_int(TESSERA_DICOM_PORT), 11112);
    assert_false(ts_cfg_bool(TESSERA_STORAGE_PREPARE));
}

static void test_print(void **state)
{
    char *envp[] = {"TESSERA_DICOM_AET=PRINTED", NULL};
    ts_err err = {0};
    assert_int_equal(ts_config_load(envp, &err), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    ts_config_print(out);
    fclose(out);
    size_t count = 0;
    const ts_cfg_setting *s = ts_config_settings(&count);
    for (size_t i = 0; i < count; i++)
        assert_contains(buf, s[i].name);
    /* the line of a setting shows its current value and its help */
    const char *line = strstr(buf, "TESSERA_DICOM_AET");
    assert_non_null(line);
    char first[256];
    snprintf(first, sizeof(first), "%.*s", (int)strcspn(line, "\n"), line);
    assert_contains(first, "PRINTED");
    assert_contains(first, "our DICOM AE title");
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_file_parsing),
        cmocka_unit_test(test_environment_overrides_file),
        cmocka_unit_test(test_bad_values_from_environment),
        cmocka_unit_test(test_bad_values_from_file),
        cmocka_unit_test(test_unknown_setting_in_file),
        cmocka_unit_test(test_line_without_equals),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_unknown_environment_variable_warns),
        cmocka_unit_test(test_log_level_applied),
        cmocka_unit_test(test_pairs),
        cmocka_unit_test(test_compiled_names),
        cmocka_unit_test(test_print),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
