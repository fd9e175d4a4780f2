/* Metrics: counters, gauges and histograms of one process, rendered in the
 * Prometheus text format and served with /health on a port of their own. */
#ifndef TS_METRICS_H
#define TS_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_metric ts_metric;

/* Registers a metric in the process registry (thread-safe; registering the
 * same name and labels twice returns the same metric). name is the base name
 * ("tessera_dicom_stores_total"); labels is NULL or a label list without braces
 * ("status=\"stored\""). Metrics of one base name share HELP and TYPE lines. */
ts_metric *ts_metrics_counter(const char *name, const char *labels, const char *help);
ts_metric *ts_metrics_gauge(const char *name, const char *labels, const char *help);
/* bounds: the upper bounds of the buckets, ascending; +Inf is added. */
ts_metric *ts_metrics_histogram(const char *name, const char *labels, const char *help,
                                const double *bounds, size_t nbounds);

void ts_metric_inc(ts_metric *m);               /* counter/gauge += 1 */
void ts_metric_add(ts_metric *m, double v);     /* counter/gauge += v */
void ts_metric_set(ts_metric *m, double v);     /* gauge = v */
void ts_metric_observe(ts_metric *m, double v); /* histogram */
double ts_metric_value(const ts_metric *m);     /* counter/gauge value, or histogram count */

/* Renders every metric; the caller frees the text. */
char *ts_metrics_render(void);

/* Serves GET /metrics and GET /health on port (0.0.0.0). health (may be NULL)
 * says whether the process is healthy: /health answers 200 "ok" or 503 with the
 * reason it wrote. */
typedef bool (*ts_health_fn)(void *user, char *reason, size_t size);
typedef struct ts_metrics_server ts_metrics_server;
int ts_metrics_serve(int port, ts_health_fn health, void *user, ts_metrics_server **out,
                     ts_err *err);
void ts_metrics_server_free(ts_metrics_server *srv);

#ifdef __cplusplus
}
#endif

#endif
