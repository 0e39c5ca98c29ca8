/*
 * test_metrics.c - the metrics registry and its Prometheus text rendering (src/core/metrics.c,
 * metrics_process.c): families, series, escaping, histograms, the series cap, concurrency.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"

static char *text;

static void teardown(void)
{
	free(text);
	text = NULL;
	metrics_reset();
}

TestSuite(metrics, .fini = teardown);

/* Renders the registry into text (freed by teardown or the next call). */
static const char *render(void)
{
	size_t len = 0;
	free(text);
	text = NULL;
	cr_assert_eq(metrics_render(&text, &len), SOMA_OK);
	cr_assert_eq(strlen(text), len);
	return text;
}

/* True when the rendering holds exactly this line. */
static bool has_line(const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)); p++) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
	}
	return false;
}

#define assert_line(l) cr_assert(has_line(l), "missing line:\n%s\nin:\n%s", (l), text)

static int count(const char *needle)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static const char *const method_label[] = {"method", NULL};

Test(metrics, counter_renders_help_type_and_samples)
{
	struct metric_family *f = metrics_counter("t_requests_total", "Requests served.", method_label);
	cr_assert_not_null(f);
	const char *get[] = {"GET"}, *post[] = {"POST"};
	struct metric_series *s = metric_series(f, get);
	metric_add(s, 1);
	metric_add(s, 2);
	metric_add(metric_series(f, post), 0.5);
	cr_assert_eq(metric_value(s), 3.0);
	render();
	assert_line("# HELP t_requests_total Requests served.");
	assert_line("# TYPE t_requests_total counter");
	assert_line("t_requests_total{method=\"GET\"} 3");
	assert_line("t_requests_total{method=\"POST\"} 0.5");
	const char *type = strstr(text, "# TYPE t_requests_total"), *help = strstr(text, "# HELP t_requests_total");
	cr_assert(help < type && type < strstr(text, "t_requests_total{"), "HELP, then TYPE, then samples");
	cr_assert_eq(count("# TYPE t_requests_total "), 1);
	cr_assert_eq(count("# HELP t_requests_total "), 1);
}

Test(metrics, gauge_set_and_add)
{
	struct metric_family *f = metrics_gauge("t_temperature", "A gauge.", NULL);
	struct metric_series *s = metric_series(f, NULL);
	metric_set(s, 10);
	metric_add(s, -12.5);
	cr_assert_eq(metric_value(s), -2.5);
	render();
	assert_line("# TYPE t_temperature gauge");
	assert_line("t_temperature -2.5");
	metric_set(s, INFINITY);
	render();
	assert_line("t_temperature +Inf");
	metric_set(s, NAN);
	render();
	assert_line("t_temperature NaN");
}

Test(metrics, unlabelled_family_renders_zero_before_use)
{
	metrics_counter("t_plain_total", "Never touched.", NULL);
	metrics_counter("t_labelled_total", "No series yet.", method_label);
	render();
	assert_line("t_plain_total 0");
	cr_assert_null(strstr(text, "t_labelled_total"), "a labelled family without series is not shown:\n%s", text);
}

Test(metrics, same_name_returns_same_family_and_series)
{
	struct metric_family *a = metrics_counter("t_dup_total", "First.", method_label);
	struct metric_family *b = metrics_counter("t_dup_total", "Second.", method_label);
	cr_assert_eq(a, b);
	const char *v1[] = {"GET"}, *v2[] = {"GET"}, *v3[] = {"PUT"};
	cr_assert_eq(metric_series(a, v1), metric_series(b, v2));
	cr_assert_neq(metric_series(a, v1), metric_series(a, v3));
	metric_add(metric_series(a, v1), 1);
	metric_add(metric_series(b, v2), 1);
	render();
	assert_line("t_dup_total{method=\"GET\"} 2");
	cr_assert_eq(count("# HELP t_dup_total "), 1);
}

Test(metrics, several_labels_keep_their_order)
{
	static const char *const labels[] = {"route", "method", "status", NULL};
	struct metric_family *f = metrics_counter("t_multi_total", "Multi.", labels);
	const char *v[] = {"/v1/x/{id}", "GET", "200"}, *w[] = {"/v1/x/{id}", "GET", "404"};
	metric_add(metric_series(f, v), 4);
	metric_add(metric_series(f, w), 1);
	render();
	assert_line("t_multi_total{route=\"/v1/x/{id}\",method=\"GET\",status=\"200\"} 4");
	assert_line("t_multi_total{route=\"/v1/x/{id}\",method=\"GET\",status=\"404\"} 1");
	cr_assert_eq(count("# TYPE t_multi_total "), 1, "one TYPE line per family");
}

Test(metrics, histogram_buckets_are_cumulative)
{
	static const double bounds[] = {0.5, 1, 10};
	struct metric_family *f = metrics_histogram("t_latency_seconds", "Latency.", method_label, bounds, 3);
	const char *get[] = {"GET"};
	struct metric_series *s = metric_series(f, get);
	static const double obs[] = {0.25, 0.5, 0.75, 4, 64};
	for (size_t i = 0; i < 5; i++)
		metric_observe(s, obs[i]);
	render();
	assert_line("# TYPE t_latency_seconds histogram");
	assert_line("t_latency_seconds_bucket{method=\"GET\",le=\"0.5\"} 2"); /* 0.5 itself is <= 0.5 */
	assert_line("t_latency_seconds_bucket{method=\"GET\",le=\"1\"} 3");
	assert_line("t_latency_seconds_bucket{method=\"GET\",le=\"10\"} 4");
	assert_line("t_latency_seconds_bucket{method=\"GET\",le=\"+Inf\"} 5");
	assert_line("t_latency_seconds_count{method=\"GET\"} 5");
	assert_line("t_latency_seconds_sum{method=\"GET\"} 69.5");
	cr_assert_eq(count("t_latency_seconds_bucket{"), 4);
	const char *inf = strstr(text, "le=\"+Inf\""), *sum = strstr(text, "t_latency_seconds_sum");
	cr_assert(strstr(text, "le=\"10\"") < inf && inf < sum, "buckets in order, then _sum and _count");
}

Test(metrics, unlabelled_histogram)
{
	static const double bounds[] = {1, 2};
	struct metric_family *f = metrics_histogram("t_sizes", "Sizes.", NULL, bounds, 2);
	metric_observe(metric_series(f, NULL), 3);
	render();
	assert_line("t_sizes_bucket{le=\"1\"} 0");
	assert_line("t_sizes_bucket{le=\"2\"} 0");
	assert_line("t_sizes_bucket{le=\"+Inf\"} 1");
	assert_line("t_sizes_sum 3");
	assert_line("t_sizes_count 1");
}

Test(metrics, bucket_bounds_render_exactly)
{
	/* le must parse back to the very bound: 6 significant digits turn 1048576 into 1.04858e+06 */
	static const double bounds[] = {0.0001, 1048576, 16777216, 123456789.5};
	metrics_histogram("t_bytes", "Bytes.", NULL, bounds, 4);
	render();
	const char *p = text;
	for (size_t i = 0; i < 4; i++) {
		p = strstr(p, "t_bytes_bucket{le=\"");
		cr_assert_not_null(p);
		p += strlen("t_bytes_bucket{le=\"");
		cr_assert_eq(strtod(p, NULL), bounds[i], "bucket %zu rendered as le=\"%.*s\"", i, (int)strcspn(p, "\""),
			     p);
	}
}

Test(metrics, label_values_are_escaped)
{
	static const char *const labels[] = {"v", NULL};
	struct metric_family *f = metrics_gauge("t_escape", "Escapes.", labels);
	const char *v[] = {"back\\slash \"quoted\"\nnext"};
	metric_set(metric_series(f, v), 1);
	render();
	assert_line("t_escape{v=\"back\\\\slash \\\"quoted\\\"\\nnext\"} 1");
}

Test(metrics, help_is_escaped)
{
	metrics_gauge("t_help", "Line one\nline two with \\ and \"quotes\".", NULL);
	render();
	assert_line("# HELP t_help Line one\\nline two with \\\\ and \"quotes\".");
}

Test(metrics, series_cap_falls_back_to_overflow)
{
	static const char *const labels[] = {"user", "kind", NULL};
	struct metric_family *f = metrics_counter("t_capped_total", "Capped.", labels);
	char name[32];
	struct metric_series *first = NULL;
	for (int i = 0; i < METRICS_MAX_SERIES; i++) {
		snprintf(name, sizeof(name), "u%d", i);
		const char *v[] = {name, "k"};
		struct metric_series *s = metric_series(f, v);
		cr_assert_not_null(s);
		first = first ? first : s;
		metric_add(s, 1);
	}
	const char *over1[] = {"one-too-many", "k"}, *over2[] = {"another", "k"}, *old[] = {"u0", "k"};
	struct metric_series *o = metric_series(f, over1);
	cr_assert_not_null(o);
	cr_assert_eq(metric_series(f, over2), o, "every new series past the cap shares the overflow series");
	cr_assert_eq(metric_series(f, old), first, "existing series are still found");
	metric_add(o, 1);
	metric_add(metric_series(f, over2), 1);
	render();
	assert_line("t_capped_total{user=\"overflow\",kind=\"overflow\"} 2");
	cr_assert_null(strstr(text, "one-too-many"));
	cr_assert_eq(count("t_capped_total{"), METRICS_MAX_SERIES + 1);
}

#define THREADS 8
#define ROUNDS	20000

struct worker {
	struct metric_family *counter, *hist; /* shared families */
	int id;				      /* thread number */
};

static void *work(void *arg)
{
	struct worker *w = arg;
	char mine[16];
	snprintf(mine, sizeof(mine), "t%d", w->id);
	const char *shared[] = {"shared"}, *own[] = {mine};
	for (int i = 0; i < ROUNDS; i++) {
		metric_add(metric_series(w->counter, shared), 1);
		metric_add(metric_series(w->counter, own), 0.5);
		metric_observe(metric_series(w->hist, shared), 1);
	}
	return NULL;
}

Test(metrics, concurrent_updates_sum_exactly)
{
	static const double bounds[] = {0.5, 2};
	struct worker w[THREADS];
	pthread_t th[THREADS];
	struct metric_family *c = metrics_counter("t_conc_total", "Concurrent.", method_label);
	struct metric_family *h = metrics_histogram("t_conc_hist", "Concurrent.", method_label, bounds, 2);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){c, h, i};
		cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	const char *shared[] = {"shared"}, *t3[] = {"t3"};
	cr_assert_eq(metric_value(metric_series(c, shared)), (double)THREADS * ROUNDS);
	cr_assert_eq(metric_value(metric_series(c, t3)), ROUNDS * 0.5);
	render();
	char line[128];
	snprintf(line, sizeof(line), "t_conc_total{method=\"shared\"} %d", THREADS * ROUNDS);
	assert_line(line);
	snprintf(line, sizeof(line), "t_conc_hist_count{method=\"shared\"} %d", THREADS * ROUNDS);
	assert_line(line);
	snprintf(line, sizeof(line), "t_conc_hist_sum{method=\"shared\"} %d", THREADS * ROUNDS);
	assert_line(line);
	snprintf(line, sizeof(line), "t_conc_hist_bucket{method=\"shared\",le=\"2\"} %d", THREADS * ROUNDS);
	assert_line(line);
	cr_assert_eq(count("t_conc_total{"), THREADS + 1, "one series per thread plus the shared one");
}

Test(metrics, process_metrics_after_register)
{
	render();
	cr_assert_null(strstr(text, "process_"));
	metrics_process_register();
	render();
	static const char *const names[] = {"process_cpu_seconds_total",
					    "process_resident_memory_bytes",
					    "process_virtual_memory_bytes",
					    "process_start_time_seconds",
					    "process_open_fds",
					    "process_max_fds"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char type[96];
		snprintf(type, sizeof(type), "# TYPE %s ", names[i]);
		cr_assert_eq(count(type), 1, "%s", names[i]);
	}
	const char *start = strstr(text, "\nprocess_start_time_seconds ");
	cr_assert_not_null(start);
	cr_assert_gt(strtod(start + 28, NULL), 1e9, "start time is seconds since the epoch");
	const char *fds = strstr(text, "\nprocess_open_fds ");
	cr_assert_gt(strtol(fds + 18, NULL, 10), 0);
	const char *rss = strstr(text, "\nprocess_resident_memory_bytes ");
	cr_assert_gt(strtod(rss + 31, NULL), 0);
}

static void collector(struct metrics_buf *out, void *arg)
{
	metrics_buf_printf(out, "# TYPE t_collected gauge\nt_collected %d\n", *(int *)arg);
}

Test(metrics, collectors_run_at_scrape_time)
{
	static int value = 7;
	metrics_collector_add(collector, &value);
	render();
	assert_line("t_collected 7");
	value = 8;
	render();
	assert_line("t_collected 8");
}

Test(metrics, reset_forgets_everything)
{
	metric_add(metric_series(metrics_counter("t_gone_total", "Gone.", NULL), NULL), 1);
	metrics_process_register();
	metrics_reset();
	render();
	cr_assert_str_eq(text, "");
	metric_add(NULL, 1); /* NULL series are ignored */
	cr_assert_eq(metric_value(NULL), 0);
}
