/* Logging as a log collector sees it: one logfmt line per event on stderr,
 * with values quoted so that a line always parses. */
#include <ctype.h>
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

#include "base/log.h"

static void test_quote(void **state)
{
    char buf[128];
    assert_string_equal(ts_log_quote(buf, sizeof(buf), "stored instance"), "\"stored instance\"");
    assert_string_equal(ts_log_quote(buf, sizeof(buf), ""), "\"\"");
    assert_string_equal(ts_log_quote(buf, sizeof(buf), NULL), "\"\"");
    assert_string_equal(ts_log_quote(buf, sizeof(buf), "say \"hi\""), "\"say \\\"hi\\\"\"");
    assert_string_equal(ts_log_quote(buf, sizeof(buf), "C:\\dicom"), "\"C:\\\\dicom\"");
    assert_string_equal(ts_log_quote(buf, sizeof(buf), "two\nlines"), "\"two\\nlines\"");
    /* other control characters would break the line or the terminal */
    assert_string_equal(ts_log_quote(buf, sizeof(buf), "a\tb\rc\x1b"), "\"a b c \"");
    /* bytes above 0x7f (UTF-8 patient names) pass through */
    assert_string_equal(ts_log_quote(buf, sizeof(buf), "M\xc3\xbcller"), "\"M\xc3\xbcller\"");
    /* the result is the buffer */
    assert_ptr_equal(ts_log_quote(buf, sizeof(buf), "x"), buf);
}

static void test_quote_truncates_inside_quotes(void **state)
{
    /* However small the buffer, the result is NUL-terminated and, from three
     * bytes on, still a complete quoted value. */
    const char *s = "abcdefghijklmnop\"\\\"\\";
    for (unsigned size = 0; size < 40; size++) {
        char buf[48];
        memset(buf, 'Z', sizeof(buf));
        ts_log_quote(buf, size, s);
        if (size == 0) {
            assert_int_equal(buf[0], 'Z'); /* nothing may be written */
            continue;
        }
        size_t len = strnlen(buf, size);
        assert_true(len < size);
        assert_int_equal(buf[size], 'Z'); /* nothing past the buffer */
        if (size < 3) {
            assert_int_equal(len, 0);
            continue;
        }
        assert_true(len >= 2);
        assert_int_equal(buf[0], '"');
        assert_int_equal(buf[len - 1], '"');
        /* an escape is never cut in half: the closing quote is not escaped */
        size_t backslashes = 0;
        for (size_t i = len - 1; i > 1 && buf[i - 1] == '\\'; i--)
            backslashes++;
        assert_int_equal(backslashes % 2, 0);
    }
}

static void test_level_parse(void **state)
{
    static const struct {
        const char *name;
        ts_log_level level;
    } ok[] = {
        {"debug", TS_LOG_DEBUG},  {"info", TS_LOG_INFO},   {"warn", TS_LOG_WARN},
        {"error", TS_LOG_ERROR},  {"INFO", TS_LOG_INFO},   {"Warn", TS_LOG_WARN},
        {"warning", TS_LOG_WARN}, {"ERROR", TS_LOG_ERROR},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ts_log_level lvl = (ts_log_level)99;
        assert_true(ts_log_level_parse(ok[i].name, &lvl));
        assert_int_equal(lvl, ok[i].level);
    }
    static const char *const bad[] = {"", "verbose", "inf", "errors", " info", "fatal"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ts_log_level lvl = TS_LOG_ERROR;
        assert_false(ts_log_level_parse(bad[i], &lvl));
        assert_int_equal(lvl, TS_LOG_ERROR); /* untouched on failure */
    }
}

static void test_enabled(void **state)
{
    ts_log_set_level(TS_LOG_WARN);
    assert_false(ts_log_enabled(TS_LOG_DEBUG));
    assert_false(ts_log_enabled(TS_LOG_INFO));
    assert_true(ts_log_enabled(TS_LOG_WARN));
    assert_true(ts_log_enabled(TS_LOG_ERROR));
    ts_log_set_level(TS_LOG_DEBUG);
    assert_true(ts_log_enabled(TS_LOG_DEBUG));
    ts_log_set_level(TS_LOG_INFO);
}

static int evaluated;

static int side_effect(void)
{
    return ++evaluated;
}

/* Runs fn with stderr sent into a pipe and returns what it wrote. */
static char *capture_stderr(void (*fn)(void))
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    dup2(pipefd[1], 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(pipefd[1]);
    size_t cap = 65536;
    char *out = malloc(cap);
    size_t len = 0;
    ssize_t n;
    while ((n = read(pipefd[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    close(pipefd[0]);
    out[len] = '\0';
    return out;
}

static void log_disabled_debug(void)
{
    ts_log_init("ingest", TS_LOG_INFO);
    ts_debug("not shown", "n=%d", side_effect());
}

static void test_disabled_level_writes_nothing(void **state)
{
    evaluated = 0;
    char *out = capture_stderr(log_disabled_debug);
    assert_string_equal(out, "");
    /* the arguments of a disabled level are not even evaluated */
    assert_int_equal(evaluated, 0);
    free(out);
}

static void log_one_line(void)
{
    char q[64];
    ts_log_init("ingest", TS_LOG_INFO);
    ts_info("stored instance", "id=%s size=%d aet=%s", "0a1b", 1234,
            ts_log_quote(q, sizeof(q), "MY SCU"));
}

/* Checks "ts=YYYY-MM-DDTHH:MM:SS.mmmZ " at the start of a line. */
static void assert_timestamp(const char *line)
{
    static const char shape[] = "ts=dddd-dd-ddTdd:dd:dd.dddZ ";
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd')
            assert_true(isdigit((unsigned char)line[i]));
        else
            assert_int_equal(line[i], shape[i]);
    }
}

static void test_line_shape(void **state)
{
    char *out = capture_stderr(log_one_line);
    /* exactly one line */
    size_t len = strlen(out);
    assert_true(len > 0);
    assert_int_equal(out[len - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + len - 1);
    assert_timestamp(out);
    assert_string_equal(out + strlen("ts=2024-01-01T00:00:00.000Z "),
                        "level=info svc=ingest msg=\"stored instance\" id=0a1b size=1234 "
                        "aet=\"MY SCU\"\n");
    free(out);
}

static void log_peer_values(void)
{
    char q[64];
    ts_log_init("ingest", TS_LOG_INFO);
    /* an AE title from the network that tries to add a field, then a line */
    ts_warn("association rejected", "calling_aet=%s peer=%s", "EVIL level=error", "10.0.0.1");
    ts_warn("x", "error=\"%s\" n=%zu", "bad \"quote\" and C:\\path\nlevel=error msg=forged",
            (size_t)3);
    ts_info("y", "aet=%s empty=%s id=%s ratio=%.1f hex=%04x big=%lld neg=%d pct=%d%%",
            ts_log_quote(q, sizeof(q), "MY SCU"), "", "0a1b", 2.5, 0xa7u, -5000000000LL, -3, 50);
    ts_info("z", "w=%*d p=%.*s", 5, 42, 3, "abcdef");
}

/* Values that come from peers (AE titles, dcmtk's error texts) cannot add a
 * field or a line, however the call site wrote its format. */
static void test_values_cannot_forge_fields_or_lines(void **state)
{
    char *out = capture_stderr(log_peer_values);
    char *lines[8] = {0};
    int n = 0;
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l && n < 8; l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    assert_int_equal(n, 4);
    const char *prefix = "ts=2024-01-01T00:00:00.000Z ";
    assert_string_equal(lines[0] + strlen(prefix),
                        "level=warn svc=ingest msg=\"association rejected\" "
                        "calling_aet=\"EVIL level=error\" peer=10.0.0.1");
    assert_string_equal(lines[1] + strlen(prefix),
                        "level=warn svc=ingest msg=\"x\" error=\"bad \\\"quote\\\" and "
                        "C:\\\\path\\nlevel=error msg=forged\" n=3");
    assert_string_equal(lines[2] + strlen(prefix),
                        "level=info svc=ingest msg=\"y\" aet=\"MY SCU\" empty=\"\" id=0a1b "
                        "ratio=2.5 hex=00a7 big=-5000000000 neg=-3 pct=50%");
    assert_string_equal(lines[3] + strlen(prefix), "level=info svc=ingest msg=\"z\" w=   42 p=abc");
    free(out);
}

static void log_levels_and_quotes(void)
{
    ts_log_init("rest", TS_LOG_DEBUG);
    ts_debug("d", NULL);
    ts_warn("disk \"almost\" full\nsoon", NULL);
    ts_error("e", "code=%d", 7);
    ts_log_set_level(TS_LOG_INFO);
}

static void test_levels_and_quoted_message(void **state)
{
    char *out = capture_stderr(log_levels_and_quotes);
    char *save = NULL;
    char *lines[4] = {0};
    int n = 0;
    for (char *l = strtok_r(out, "\n", &save); l && n < 4; l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    /* the newline inside the message did not split the event */
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++)
        assert_timestamp(lines[i]);
    const size_t ts_len = strlen("ts=2024-01-01T00:00:00.000Z ");
    assert_string_equal(lines[0] + ts_len, "level=debug svc=rest msg=\"d\"");
    assert_string_equal(lines[1] + ts_len,
                        "level=warn svc=rest msg=\"disk \\\"almost\\\" full\\nsoon\"");
    assert_string_equal(lines[2] + ts_len, "level=error svc=rest msg=\"e\" code=7");
    free(out);
}

static void log_long_line(void)
{
    static char big[10000];
    memset(big, 'v', sizeof(big) - 1);
    ts_log_init("jobs", TS_LOG_INFO);
    ts_info("long", "big=%s", big);
}

static void test_long_line_stays_one_line(void **state)
{
    char *out = capture_stderr(log_long_line);
    size_t len = strlen(out);
    /* cut, but still one line ending in a newline, of bounded size */
    assert_true(len <= 4096);
    assert_int_equal(out[len - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + len - 1);
    assert_non_null(strstr(out, "svc=jobs msg=\"long\" big=vvvv"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_quote_truncates_inside_quotes),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test(test_enabled),
        cmocka_unit_test(test_disabled_level_writes_nothing),
        cmocka_unit_test(test_line_shape),
        cmocka_unit_test(test_values_cannot_forge_fields_or_lines),
        cmocka_unit_test(test_levels_and_quoted_message),
        cmocka_unit_test(test_long_line_stays_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
