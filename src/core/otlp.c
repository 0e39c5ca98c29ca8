/*
 * otlp.c - the span queue and the export thread (see otlp.h for the design).
 *
 * Threads: any thread calls otlp_enqueue (lock, copy one record into the ring, unlock; a signal
 * only when a full batch waits); the export thread is the only one that takes from the ring and
 * the only one that talks to the collector, so a hanging collector holds that thread alone. The
 * main thread starts and stops it. Invariant: count <= cap; records in the ring are finished spans.
 */
#include "core/otlp.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/url_shown.h"
#include "llm/curl_dl.h"

#define BATCH_WAIT_MS	 1000  /* a partial batch is sent after this long */
#define MAX_BACKOFF_MS	 30000 /* longest wait between tries (Retry-After included) */
#define FIRST_BACKOFF_MS 1000  /* doubles per try, plus up to 25 % jitter */

static struct {
	pthread_mutex_t lock;	       /* guards everything below up to thread */
	pthread_cond_t wake;	       /* the export thread waits here (monotonic clock) */
	struct trace_span *ring;       /* cap records (owned) */
	size_t cap, head, count;       /* ring bounds: oldest at head */
	size_t batch;		       /* otel.batch_size */
	bool stopping;		       /* otlp_stop was called */
	bool running;		       /* the thread exists */
	pthread_t thread;	       /* the export thread */
	char url[1024];		       /* <endpoint>/v1/traces */
	char shown[1024];	       /* url for the logs: no user, password or query (url_shown.h) */
	long timeout_ms;	       /* otel.timeout_ms */
	const char *service_name;      /* otel.service_name (config storage) */
	bool failing;		       /* the last batch failed (logged once per outage) */
	_Atomic uint64_t flush_end_ns; /* set by otlp_stop: no request runs past it (0: none) */
} ex = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct metric_series *m_exported, *m_failed, *m_dropped, *m_retried;

static void register_metrics(void)
{
	struct metric_family *f;
	f = metrics_counter("soma_trace_spans_exported_total", "Spans accepted by the OTLP collector.", NULL);
	m_exported = f ? metric_series(f, NULL) : NULL;
	f = metrics_counter("soma_trace_spans_failed_total",
			    "Spans whose export failed (refused with 400 or another non-retryable status, or "
			    "retries used up); check otel.endpoint and the collector.",
			    NULL);
	m_failed = f ? metric_series(f, NULL) : NULL;
	f = metrics_counter("soma_trace_spans_dropped_total",
			    "Spans dropped because the export queue was full (the collector is slow or down; "
			    "raise otel.queue_size to absorb longer outages).",
			    NULL);
	m_dropped = f ? metric_series(f, NULL) : NULL;
	f = metrics_counter("soma_trace_export_retries_total",
			    "Export requests tried again after 429, 502, 503, 504 or a transport error.", NULL);
	m_retried = f ? metric_series(f, NULL) : NULL;
}

static void count(struct metric_series *s, double v)
{
	if (s)
		metric_add(s, v);
}

void otlp_enqueue(const struct trace_span *s)
{
	pthread_mutex_lock(&ex.lock);
	if (!ex.running || ex.count == ex.cap) {
		bool running = ex.running;
		pthread_mutex_unlock(&ex.lock);
		if (running)
			count(m_dropped, 1);
		return;
	}
	ex.ring[(ex.head + ex.count) % ex.cap] = *s;
	ex.count++;
	bool full = ex.count == ex.batch;
	pthread_mutex_unlock(&ex.lock);
	if (full)
		pthread_cond_signal(&ex.wake);
}

/* Copies up to ex.batch spans out of the ring (lock held). */
static size_t take(struct trace_span *out)
{
	size_t n = ex.count < ex.batch ? ex.count : ex.batch;
	for (size_t i = 0; i < n; i++)
		out[i] = ex.ring[(ex.head + i) % ex.cap];
	ex.head = (ex.head + n) % ex.cap;
	ex.count -= n;
	return n;
}

/* Waits ms unless otlp_stop is called meanwhile; true when stopping. */
static bool sleep_unless_stopping(long ms)
{
	struct timespec until = clock_deadline_in(CLOCK_MONOTONIC, ms);
	pthread_mutex_lock(&ex.lock);
	while (!ex.stopping && pthread_cond_timedwait(&ex.wake, &ex.lock, &until) == 0)
		;
	bool stopping = ex.stopping;
	pthread_mutex_unlock(&ex.lock);
	return stopping;
}

/* ---- one POST ---------------------------------------------------------------------------------- */

struct answer {
	long status;	  /* HTTP status, 0 on a transport error */
	long retry_after; /* seconds, -1 when not sent */
};

static size_t on_header(char *buf, size_t size, size_t nitems, void *ctx)
{
	struct answer *a = ctx;
	size_t n = size * nitems;
	if (n > 12 && strncasecmp(buf, "retry-after:", 12) == 0) {
		char *end;
		long secs = strtol(buf + 12, &end, 10);
		a->retry_after = end != buf + 12 && secs >= 0 ? secs : -1; /* an HTTP date: backoff instead */
	}
	return n;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	(void)ptr, (void)ctx;
	return size * nmemb; /* {} or a partialSuccess we do not act on (it must not be retried) */
}

/* libcurl's progress callback: ends a request in flight when otlp_stop's bound has passed. */
static int past_flush_end(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)ctx, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	uint64_t end = atomic_load(&ex.flush_end_ns);
	return end && clock_mono_ns() >= end;
}

/* ms a request may take: otel.timeout_ms, or less once otlp_stop has set the flush's end */
static long request_ms(void)
{
	uint64_t end = atomic_load(&ex.flush_end_ns), now = clock_mono_ns();
	if (!end)
		return ex.timeout_ms;
	long left = end > now ? (long)((end - now) / 1000000) : 0;
	return left < 1 ? 1 : left < ex.timeout_ms ? left : ex.timeout_ms;
}

static struct answer post(const char *body, size_t len, char *why, size_t why_cap)
{
	struct answer a = {0, -1};
	const char *reason = "libcurl is not available";
	const struct curl_api *curl = curl_api_get(&reason);
	CURL *h = curl ? curl_api_thread_handle() : NULL;
	if (!h) {
		snprintf(why, why_cap, "%s", reason);
		return a;
	}
	struct curl_slist *hs = curl->slist_append(NULL, "Content-Type: application/json");
	struct curl_slist *more = hs ? curl->slist_append(hs, "Expect:") : NULL;
	if (!more) {
		curl->slist_free_all(hs);
		snprintf(why, why_cap, "out of memory");
		return a;
	}
	curl->easy_setopt(h, CURLOPT_URL, ex.url);
	curl->easy_setopt(h, CURLOPT_HTTPHEADER, hs);
	curl->easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl->easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
	curl->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl->easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl->easy_setopt(h, CURLOPT_HEADERDATA, &a);
	curl->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	long ms = request_ms();
	curl->easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
	curl->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms);
	curl->easy_setopt(h, CURLOPT_XFERINFOFUNCTION, past_flush_end);
	curl->easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	CURLcode rc = curl->easy_perform(h);
	if (rc == CURLE_OK)
		curl->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.status);
	else
		snprintf(why, why_cap, "%s", curl->easy_strerror(rc));
	curl->easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl->slist_free_all(hs);
	if (rc == CURLE_OK && (a.status < 200 || a.status > 299))
		snprintf(why, why_cap, "the collector answered %ld", a.status);
	return a;
}

static bool retryable(long status)
{
	return status == 0 || status == 429 || status == 502 || status == 503 || status == 504;
}

static void outcome(bool ok, size_t n, const char *why)
{
	count(ok ? m_exported : m_failed, (double)n);
	if (ok && ex.failing)
		log_info("otel", "spans reach the collector at %s again", ex.shown);
	else if (!ok && !ex.failing)
		log_warn("otel",
			 "cannot export %zu spans to %s: %s; spans are dropped until it answers (check "
			 "otel.endpoint and the collector)",
			 n, ex.shown, why);
	ex.failing = !ok;
}

/* Sends one batch, retrying what OTLP says to retry; final: one try only (shutdown). Returns
 * whether the collector took it. */
static bool export_batch(const struct trace_span *spans, size_t n, bool final)
{
	size_t len = 0;
	char *body = otlp_encode(spans, n, ex.service_name, &len), why[256] = "out of memory";
	struct answer a = {0, -1};
	for (int attempt = 1; body; attempt++) {
		a = post(body, len, why, sizeof(why));
		if ((a.status >= 200 && a.status <= 299) || !retryable(a.status) || final ||
		    attempt >= OTLP_MAX_ATTEMPTS)
			break;
		long wait = a.retry_after >= 0 ? a.retry_after * 1000L : (long)FIRST_BACKOFF_MS << (attempt - 1);
		wait += a.retry_after >= 0 ? 0 : (long)(ids_random_u32() % (uint32_t)(wait / 4 + 1));
		count(m_retried, 1);
		final = sleep_unless_stopping(wait < MAX_BACKOFF_MS ? wait : MAX_BACKOFF_MS); /* stop: one last try */
	}
	free(body);
	bool ok = a.status >= 200 && a.status <= 299;
	outcome(ok, n, why);
	return ok;
}

static void *export_main(void *arg)
{
	struct trace_span *batch = arg;
	pthread_mutex_lock(&ex.lock);
	while (!ex.stopping) {
		struct timespec until = clock_deadline_in(CLOCK_MONOTONIC, BATCH_WAIT_MS);
		while (!ex.stopping && ex.count < ex.batch && pthread_cond_timedwait(&ex.wake, &ex.lock, &until) == 0)
			;
		size_t n = take(batch);
		pthread_mutex_unlock(&ex.lock);
		if (n)
			export_batch(batch, n, false);
		pthread_mutex_lock(&ex.lock);
	}
	/* shutdown: what is queued goes out in single tries, all of them within otlp_stop's bound;
	 * the first failure ends the flush (a collector that failed one batch would make each of the
	 * next ones wait out its own timeout) */
	size_t n, left = 0;
	bool ok = true;
	while ((n = take(batch)) > 0) {
		if (!ok || clock_mono_ns() >= atomic_load(&ex.flush_end_ns)) {
			left += n;
			continue;
		}
		pthread_mutex_unlock(&ex.lock);
		ok = export_batch(batch, n, true);
		pthread_mutex_lock(&ex.lock);
	}
	pthread_mutex_unlock(&ex.lock);
	if (left) {
		count(m_failed, (double)left);
		log_warn("otel",
			 "shutdown: %zu span(s) not exported (the collector at %s failed or the flush's time ran out)",
			 left, ex.shown);
	}
	free(batch);
	return NULL;
}

enum soma_err otlp_start(void)
{
	register_metrics();
	const char *endpoint = cfg_str(CFG_OTEL_ENDPOINT);
	if (!endpoint[0] || ex.running)
		return SOMA_OK;
	if (!otlp_traces_url(endpoint, ex.url, sizeof(ex.url))) {
		log_error("otel", "otel.endpoint is too long (%zu bytes); give the collector's base URL",
			  strlen(endpoint));
		return SOMA_ERR_CONFIG;
	}
	url_shown(ex.url, ex.shown, sizeof(ex.shown));
	ex.cap = (size_t)cfg_int(CFG_OTEL_QUEUE_SIZE);
	ex.batch = (size_t)cfg_int(CFG_OTEL_BATCH_SIZE);
	if (ex.batch > ex.cap)
		ex.batch = ex.cap;
	ex.timeout_ms = (long)cfg_int(CFG_OTEL_TIMEOUT_MS);
	ex.service_name = cfg_str(CFG_OTEL_SERVICE_NAME);
	ex.ring = calloc(ex.cap, sizeof(*ex.ring));
	struct trace_span *batch = calloc(ex.batch, sizeof(*batch));
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ex.wake, &ca);
	pthread_condattr_destroy(&ca);
	ex.head = ex.count = 0;
	ex.stopping = ex.failing = false;
	atomic_store(&ex.flush_end_ns, 0);
	if (!ex.ring || !batch || pthread_create(&ex.thread, NULL, export_main, batch) != 0) {
		free(ex.ring);
		free(batch);
		ex.ring = NULL;
		pthread_cond_destroy(&ex.wake);
		log_error("otel", "cannot start the span exporter (out of memory or threads); lower otel.queue_size");
		return SOMA_ERR_NOMEM;
	}
	ex.running = true;
	trace_set_enabled(true);
	log_info("otel", "exporting spans to %s as service %s", ex.shown, ex.service_name);
	return SOMA_OK;
}

void otlp_stop(long bound_ms)
{
	trace_set_enabled(false);
	pthread_mutex_lock(&ex.lock);
	bool running = ex.running;
	long ms = bound_ms < ex.timeout_ms ? bound_ms : ex.timeout_ms;
	atomic_store(&ex.flush_end_ns, clock_mono_ns() + (uint64_t)(ms > 0 ? ms : 0) * 1000000);
	ex.stopping = true;
	pthread_mutex_unlock(&ex.lock);
	if (!running)
		return;
	pthread_cond_broadcast(&ex.wake);
	pthread_join(ex.thread, NULL);
	pthread_mutex_lock(&ex.lock);
	ex.running = false;
	free(ex.ring);
	ex.ring = NULL;
	ex.count = 0;
	pthread_mutex_unlock(&ex.lock);
	pthread_cond_destroy(&ex.wake);
}
