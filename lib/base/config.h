/* Configuration: one table of every setting (lib/base/settings.def: name, type,
 * default, limits, help). Values come from the defaults, then an optional file
 * (TESSERA_CONFIG_FILE, lines of NAME=value), then the environment. A bad value
 * is an error that names the setting; services stop on it. Every value is
 * parsed once, at load; read-only after it.
 *
 * Code names a setting by its compiled name, the enum below
 * (ts_cfg_int(TESSERA_DICOM_PORT)): a misspelt setting does not build. */
#ifndef TS_CONFIG_H
#define TS_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TS_CFG_STRING, TS_CFG_INT, TS_CFG_BOOL, TS_CFG_CHOICE, TS_CFG_PAIRS } ts_cfg_type;

/* Every setting, named as its environment variable. */
typedef enum {
#define TS_SETTING(name, type, default_value, min, max, choices, help) name,
#include "base/settings.def"
#undef TS_SETTING
    TS_SETTING_COUNT
} ts_setting;

typedef struct ts_cfg_setting {
    const char *name; /* environment variable, e.g. "TESSERA_DICOM_PORT" */
    ts_cfg_type type;
    const char *default_value;
    long min, max;       /* TS_CFG_INT, and the numbers of TS_CFG_PAIRS */
    const char *choices; /* TS_CFG_CHOICE only: "a|b|c" */
    const char *help;
} ts_cfg_setting;

/* Loads defaults, then the file named by TESSERA_CONFIG_FILE in envp (if any),
 * then envp (NULL means the process environment). Validates and parses every
 * value. */
int ts_config_load(char **envp, ts_err *err);

/* Values of a loaded configuration, parsed at load (no work per call). Asking
 * for a setting of another type (ts_cfg_int of a string) aborts: it is a
 * programming error, not a user's. */
const char *ts_cfg_str(ts_setting s); /* any type: the text as given */
long ts_cfg_int(ts_setting s);
bool ts_cfg_bool(ts_setting s);

/* A TS_CFG_PAIRS setting ("Comment=1024,Reviewer=1025"): its n entries. */
typedef struct ts_cfg_pair {
    const char *name;
    long number;
} ts_cfg_pair;
const ts_cfg_pair *ts_cfg_pairs(ts_setting s, size_t *n);

/* Writes every setting with its current value and help, for --help. */
void ts_config_print(FILE *out);

/* The table itself (for documentation and tests), in ts_setting order. */
const ts_cfg_setting *ts_config_settings(size_t *count);

#ifdef __cplusplus
}
#endif

#endif
