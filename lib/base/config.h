/* Configuration: one table of every setting (name, type, default, limits, help).
 * Values come from the defaults, then an optional file (TESSERA_CONFIG_FILE,
 * lines of NAME=value), then the environment. A bad value is an error that names
 * the setting; services stop on it. Read-only after load. */
#ifndef TS_CONFIG_H
#define TS_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TS_CFG_STRING, TS_CFG_INT, TS_CFG_BOOL, TS_CFG_CHOICE } ts_cfg_type;

typedef struct ts_cfg_setting {
    const char *name; /* environment variable, e.g. "TESSERA_DICOM_PORT" */
    ts_cfg_type type;
    const char *default_value;
    long min, max;       /* TS_CFG_INT only */
    const char *choices; /* TS_CFG_CHOICE only: "a|b|c" */
    const char *help;
} ts_cfg_setting;

/* Loads defaults, then the file named by TESSERA_CONFIG_FILE in envp (if any),
 * then envp (NULL means the process environment). Validates every value. */
int ts_config_load(char **envp, ts_err *err);

/* Values of a loaded configuration. Asking for an unknown name aborts: it is a
 * programming error, not a user's. */
const char *ts_config_str(const char *name);
long ts_config_int(const char *name);
bool ts_config_bool(const char *name);

/* Writes every setting with its current value and help, for --help. */
void ts_config_print(FILE *out);

/* The table itself (for documentation and tests). */
const ts_cfg_setting *ts_config_settings(size_t *count);

#ifdef __cplusplus
}
#endif

#endif
