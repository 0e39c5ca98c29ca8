/*
 * metrics.c - registry, series lookup and Prometheus rendering (see metrics.h).
 */
#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct metric_series {
	const struct metric_family *family;	       /* owner; gives the histogram bounds */
	char *values[METRICS_MAX_LABELS];	       /* label values; owned */
	uint64_t hash;				       /* of the label values */
	_Atomic uint64_t bits;			       /* counter/gauge value as double bits */
	_Atomic uint64_t count;			       /* histogram observations */
	_Atomic uint64_t sum_bits;		       /* histogram sum as double bits */
	_Atomic uint64_t buckets[METRICS_MAX_BUCKETS]; /* non-cumulative counts per bucket */
};

struct metric_family {
	char *name, *help;		    /* owned */
	enum metric_type type;		    /* counter, gauge, histogram */
	char *labels[METRICS_MAX_LABELS];   /* label names; owned */
	size_t nlabels;			    /* used entries of labels */
	double bounds[METRICS_MAX_BUCKETS]; /* histogram upper bounds */
	size_t nbounds;			    /* used entries of bounds */
	pthread_mutex_t lock;		    /* guards series and index */
	struct metric_series **series;	    /* in creation order */
	size_t nseries, cap;		    /* used and allocated */
	struct metric_series *overflow;	    /* target once the cap is reached */
};

struct collector {
	metrics_collect_fn fn; /* appends families at scrape time */
	void *arg;	       /* passed back to fn */
};

struct metrics_buf {
	char *p;    /* malloc'd text */
	size_t len; /* bytes used */
	size_t cap; /* bytes allocated */
	int failed; /* an allocation failed */
};

#define MAX_FAMILIES   256
#define MAX_COLLECTORS 16

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric_family *families[MAX_FAMILIES];
static size_t nfamilies;
static struct collector collectors[MAX_COLLECTORS];
static size_t ncollectors;

static double bits_to_double(uint64_t b)
{
	double d;
	memcpy(&d, &b, sizeof(d));
	return d;
}

static uint64_t double_to_bits(double d)
{
	uint64_t b;
	memcpy(&b, &d, sizeof(b));
	return b;
}

static void atomic_add_double(_Atomic uint64_t *slot, double v)
{
	uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(slot, &old, double_to_bits(bits_to_double(old) + v),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

static struct metric_family *family_new(const char *name, const char *help, enum metric_type type,
					const char *const *labels, const double *bounds, size_t nbounds)
{
	pthread_mutex_lock(&registry_lock);
	for (size_t i = 0; i < nfamilies; i++) {
		if (strcmp(families[i]->name, name) == 0) {
			pthread_mutex_unlock(&registry_lock);
			return families[i];
		}
	}
	struct metric_family *f = NULL;
	if (nfamilies >= MAX_FAMILIES || !(f = calloc(1, sizeof(*f))))
		goto out;
	f->name = strdup(name);
	f->help = strdup(help);
	f->type = type;
	for (size_t i = 0; labels && labels[i] && i < METRICS_MAX_LABELS; i++)
		f->labels[f->nlabels++] = strdup(labels[i]);
	for (size_t i = 0; i < nbounds && i < METRICS_MAX_BUCKETS - 1; i++)
		f->bounds[f->nbounds++] = bounds[i];
	pthread_mutex_init(&f->lock, NULL);
	families[nfamilies++] = f;
out:
	pthread_mutex_unlock(&registry_lock);
	return f;
}

struct metric_family *metrics_counter(const char *name, const char *help, const char *const *labels)
{
	return family_new(name, help, METRIC_COUNTER, labels, NULL, 0);
}

struct metric_family *metrics_gauge(const char *name, const char *help, const char *const *labels)
{
	return family_new(name, help, METRIC_GAUGE, labels, NULL, 0);
}

struct metric_family *metrics_histogram(const char *name, const char *help, const char *const *labels,
					const double *buckets, size_t nbuckets)
{
	return family_new(name, help, METRIC_HISTOGRAM, labels, buckets, nbuckets);
}

static uint64_t hash_values(const char *const *values, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
			h = (h ^ *p) * 1099511628211ull;
		h = (h ^ 0xff) * 1099511628211ull;
	}
	return h;
}

static struct metric_series *series_new(struct metric_family *f, const char *const *values, uint64_t h)
{
	struct metric_series *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->hash = h;
	s->family = f;
	for (size_t i = 0; i < f->nlabels; i++)
		s->values[i] = strdup(values[i] ? values[i] : "");
	return s;
}

struct metric_series *metric_series(struct metric_family *f, const char *const *values)
{
	uint64_t h = hash_values(values, f->nlabels);
	struct metric_series *found = NULL;
	pthread_mutex_lock(&f->lock);
	for (size_t i = f->nseries; i-- > 0;) {
		struct metric_series *s = f->series[i];
		if (s->hash != h)
			continue;
		size_t j = 0;
		while (j < f->nlabels && strcmp(s->values[j], values[j] ? values[j] : "") == 0)
			j++;
		if (j == f->nlabels) {
			found = s;
			goto out;
		}
	}
	if (f->nseries >= METRICS_MAX_SERIES) {
		if (!f->overflow) {
			const char *ov[METRICS_MAX_LABELS] = {"overflow", "overflow", "overflow", "overflow"};
			f->overflow = series_new(f, ov, 0);
		}
		found = f->overflow;
		goto out;
	}
	if (f->nseries == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 16;
		struct metric_series **grown = realloc(f->series, cap * sizeof(*grown));
		if (!grown)
			goto out;
		f->series = grown;
		f->cap = cap;
	}
	found = series_new(f, values, h);
	if (found)
		f->series[f->nseries++] = found;
out:
	pthread_mutex_unlock(&f->lock);
	return found;
}

void metric_add(struct metric_series *s, double v)
{
	if (s)
		atomic_add_double(&s->bits, v);
}

void metric_set(struct metric_series *s, double v)
{
	if (s)
		atomic_store_explicit(&s->bits, double_to_bits(v), memory_order_relaxed);
}

double metric_value(struct metric_series *s)
{
	return s ? bits_to_double(atomic_load_explicit(&s->bits, memory_order_relaxed)) : 0;
}

void metric_observe(struct metric_series *s, double v)
{
	if (!s)
		return;
	const struct metric_family *f = s->family;
	size_t b = 0;
	while (b < f->nbounds && v > f->bounds[b])
		b++;
	atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
	atomic_add_double(&s->sum_bits, v);
	atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

void metrics_collector_add(metrics_collect_fn fn, void *arg)
{
	pthread_mutex_lock(&registry_lock);
	if (ncollectors < MAX_COLLECTORS)
		collectors[ncollectors++] = (struct collector){fn, arg};
	pthread_mutex_unlock(&registry_lock);
}

void metrics_buf_printf(struct metrics_buf *out, const char *fmt, ...)
{
	if (out->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(out->p + out->len, out->cap - out->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			out->failed = 1;
			return;
		}
		if ((size_t)n < out->cap - out->len) {
			out->len += (size_t)n;
			return;
		}
		size_t cap = (out->cap + (size_t)n + 1) * 2;
		char *grown = realloc(out->p, cap);
		if (!grown) {
			out->failed = 1;
			return;
		}
		out->p = grown;
		out->cap = cap;
	}
}

/* HELP text escapes only backslash and newline. */
static void put_help(struct metrics_buf *out, const char *help)
{
	for (const char *p = help; *p; p++) {
		if (*p == '\\')
			metrics_buf_printf(out, "\\\\");
		else if (*p == '\n')
			metrics_buf_printf(out, "\\n");
		else
			metrics_buf_printf(out, "%c", *p);
	}
}

/* Label values escape backslash, double quote and newline. */
static void put_label_value(struct metrics_buf *out, const char *v)
{
	for (const char *p = v; *p; p++) {
		if (*p == '\\')
			metrics_buf_printf(out, "\\\\");
		else if (*p == '"')
			metrics_buf_printf(out, "\\\"");
		else if (*p == '\n')
			metrics_buf_printf(out, "\\n");
		else
			metrics_buf_printf(out, "%c", *p);
	}
}

static void put_labels(struct metrics_buf *out, const struct metric_family *f, const struct metric_series *s,
		       const char *le)
{
	if (f->nlabels == 0 && !le)
		return;
	metrics_buf_printf(out, "{");
	for (size_t i = 0; i < f->nlabels; i++) {
		metrics_buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
		put_label_value(out, s->values[i]);
		metrics_buf_printf(out, "\"");
	}
	if (le)
		metrics_buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
	metrics_buf_printf(out, "}");
}

/* Shortest decimal that reads back as exactly v (Prometheus parses Go floats). */
static void format_double(char *buf, size_t cap, double v)
{
	if (v == floor(v) && fabs(v) < 9007199254740992.0) {
		snprintf(buf, cap, "%.0f", v);
		return;
	}
	for (int precision = 1; precision <= 17; precision++) {
		snprintf(buf, cap, "%.*g", precision, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

static void put_number(struct metrics_buf *out, double v)
{
	if (isnan(v))
		metrics_buf_printf(out, " NaN\n");
	else if (isinf(v))
		metrics_buf_printf(out, " %sInf\n", v > 0 ? "+" : "-");
	else if (v == floor(v) && fabs(v) < 9007199254740992.0)
		metrics_buf_printf(out, " %.0f\n", v);
	else {
		char num[40];
		format_double(num, sizeof(num), v);
		metrics_buf_printf(out, " %s\n", num);
	}
}

static void render_histogram(struct metrics_buf *out, const struct metric_family *f, const struct metric_series *s)
{
	uint64_t cumulative = 0;
	char le[64];
	for (size_t b = 0; b <= f->nbounds; b++) {
		cumulative += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
		if (b < f->nbounds)
			format_double(le, sizeof(le), f->bounds[b]);
		else
			snprintf(le, sizeof(le), "+Inf");
		metrics_buf_printf(out, "%s_bucket", f->name);
		put_labels(out, f, s, le);
		metrics_buf_printf(out, " %llu\n", (unsigned long long)cumulative);
	}
	metrics_buf_printf(out, "%s_sum", f->name);
	put_labels(out, f, s, NULL);
	put_number(out, bits_to_double(atomic_load_explicit(&s->sum_bits, memory_order_relaxed)));
	/* +Inf equals _count because both are read from the same cumulative walk */
	metrics_buf_printf(out, "%s_count", f->name);
	put_labels(out, f, s, NULL);
	metrics_buf_printf(out, " %llu\n", (unsigned long long)cumulative);
}

static void render_family(struct metrics_buf *out, struct metric_family *f)
{
	static const char *const type_names[] = {"counter", "gauge", "histogram"};
	pthread_mutex_lock(&f->lock);
	if (f->nseries == 0 && f->nlabels > 0) {
		pthread_mutex_unlock(&f->lock);
		return; /* no series yet: nothing to say (a bare TYPE line would be noise) */
	}
	metrics_buf_printf(out, "# HELP %s ", f->name);
	put_help(out, f->help);
	metrics_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
	if (f->nlabels == 0 && f->nseries == 0) {
		/* unlabelled family: its one series exists implicitly */
		const char *none[1] = {NULL};
		pthread_mutex_unlock(&f->lock);
		metric_series(f, none);
		pthread_mutex_lock(&f->lock);
	}
	size_t n = f->nseries + (f->overflow ? 1 : 0);
	for (size_t i = 0; i < n; i++) {
		struct metric_series *s = i < f->nseries ? f->series[i] : f->overflow;
		if (f->type == METRIC_HISTOGRAM) {
			render_histogram(out, f, s);
			continue;
		}
		metrics_buf_printf(out, "%s", f->name);
		put_labels(out, f, s, NULL);
		put_number(out, bits_to_double(atomic_load_explicit(&s->bits, memory_order_relaxed)));
	}
	pthread_mutex_unlock(&f->lock);
}

enum soma_err metrics_render(char **out, size_t *len)
{
	struct metrics_buf buf = {.p = malloc(4096), .cap = 4096};
	if (!buf.p)
		return SOMA_ERR_NOMEM;
	buf.p[0] = '\0';
	pthread_mutex_lock(&registry_lock);
	size_t nf = nfamilies, nc = ncollectors;
	struct metric_family *fams[MAX_FAMILIES];
	struct collector cols[MAX_COLLECTORS];
	memcpy(fams, families, nf * sizeof(*fams));
	memcpy(cols, collectors, nc * sizeof(*cols));
	pthread_mutex_unlock(&registry_lock);
	for (size_t i = 0; i < nf; i++)
		render_family(&buf, fams[i]);
	for (size_t i = 0; i < nc; i++)
		cols[i].fn(&buf, cols[i].arg);
	if (buf.failed) {
		free(buf.p);
		return SOMA_ERR_NOMEM;
	}
	*out = buf.p;
	*len = buf.len;
	return SOMA_OK;
}

static void series_free(struct metric_series *s, size_t nlabels)
{
	if (!s)
		return;
	for (size_t i = 0; i < nlabels; i++)
		free(s->values[i]);
	free(s);
}

static _Atomic unsigned generation;

unsigned metrics_generation(void)
{
	return atomic_load_explicit(&generation, memory_order_relaxed);
}

void metrics_reset(void)
{
	atomic_fetch_add(&generation, 1);
	pthread_mutex_lock(&registry_lock);
	for (size_t i = 0; i < nfamilies; i++) {
		struct metric_family *f = families[i];
		for (size_t j = 0; j < f->nseries; j++)
			series_free(f->series[j], f->nlabels);
		series_free(f->overflow, f->nlabels);
		for (size_t j = 0; j < f->nlabels; j++)
			free(f->labels[j]);
		free(f->series);
		free(f->name);
		free(f->help);
		pthread_mutex_destroy(&f->lock);
		free(f);
	}
	nfamilies = 0;
	ncollectors = 0;
	pthread_mutex_unlock(&registry_lock);
}
