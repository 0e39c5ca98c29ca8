/*
 * metrics.h - the process-wide metrics registry, exported in Prometheus text format 0.0.4.
 *
 * DESIGN: a family (name, help, type, label names) owns its series; a series is found or created
 * by its label values. Families live for the whole process (they are registered at start-up and
 * never freed except by metrics_reset() in tests), so pointers to families and series can be
 * cached by callers. Lookups take the family's mutex; updates are lock-free atomics, so any
 * thread may update any series. Each family caps its series count (METRICS_MAX_SERIES) so a
 * label that takes unbounded values cannot eat memory: past the cap, updates go to a series whose
 * label values are all "overflow". Collectors (callbacks) add metrics computed at scrape time,
 * such as process_*.
 */
#ifndef SOMA_CORE_METRICS_H
#define SOMA_CORE_METRICS_H

#include <stddef.h>

#include "core/err.h"

#define METRICS_MAX_LABELS  4
#define METRICS_MAX_SERIES  2048
#define METRICS_MAX_BUCKETS 24

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_family;
struct metric_series;

/* Registers a family; labels is a NULL-terminated list of label names (or NULL for none).
 * Registering the same name twice returns the existing family. Never NULL except on OOM. */
struct metric_family *metrics_counter(const char *name, const char *help, const char *const *labels);
struct metric_family *metrics_gauge(const char *name, const char *help, const char *const *labels);
/* buckets: increasing upper bounds (+Inf is implicit). */
struct metric_family *metrics_histogram(const char *name, const char *help, const char *const *labels,
					const double *buckets, size_t nbuckets);

/* Finds or creates the series with these label values (as many as the family has labels).
 * The pointer stays valid for the life of the process. */
struct metric_series *metric_series(struct metric_family *f, const char *const *values);

void metric_add(struct metric_series *s, double v);	/* counter or gauge */
void metric_set(struct metric_series *s, double v);	/* gauge */
void metric_observe(struct metric_series *s, double v); /* histogram */
/* Reads a counter or gauge value (tests, health). */
double metric_value(struct metric_series *s);

/* A collector appends complete families (HELP, TYPE, samples) to the output at scrape time. */
struct metrics_buf;
typedef void (*metrics_collect_fn)(struct metrics_buf *out, void *arg);
void metrics_collector_add(metrics_collect_fn fn, void *arg);
/* printf into the scrape output (used by collectors). */
void metrics_buf_printf(struct metrics_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Renders the whole registry; *out is malloc'd and owned by the caller. */
enum soma_err metrics_render(char **out, size_t *len) SOMA_MUST_CHECK;
/* Changes on every metrics_reset(): callers that cache series pointers check it. */
unsigned metrics_generation(void);
/* Drops every family and collector (tests only; no other thread may be using metrics). */
void metrics_reset(void);

/* Standard process_* metrics (CPU, memory, fds, start time). */
void metrics_process_register(void);

#endif
