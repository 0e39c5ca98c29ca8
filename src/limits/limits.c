/*
 * limits.c - the process's limits (see limits.h): the settings, the active driver, the bucket
 * and calendar arithmetic, the 429 answers and the rejection metric.
 *
 * DESIGN: `lim` is written by limits_start()/limits_stop() on the main thread while no other
 * thread uses it (before io threads start, after they stop); in between it is read-only, and all
 * mutable state is inside the driver. soma_limits_rejected_total{limit} counts every 429 given
 * here (limit = requests | llm_tokens | streams).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/metrics.h"
#include "http/http.h"
#include "limits/limits.h"

static struct {
	struct limits_opts o;	      /* what is enforced */
	struct limits_driver *driver; /* NULL: nothing is */
} lim;

enum { REJ_REQUESTS, REJ_TOKENS, REJ_STREAMS };

bool limits_bucket_take(struct limits_bucket *b, double rate, double burst, uint64_t now_ns, double *retry_s)
{
	if (!b->primed) {
		b->tokens = burst;
		b->last_ns = now_ns;
		b->primed = true;
	} else if (now_ns > b->last_ns) {
		b->tokens += (double)(now_ns - b->last_ns) / 1e9 * rate;
		if (b->tokens > burst)
			b->tokens = burst;
		b->last_ns = now_ns;
	}
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		return true;
	}
	*retry_s = (1.0 - b->tokens) / rate;
	return false;
}

int64_t limits_utc_day(int64_t now_ms)
{
	return now_ms / 86400000;
}

int64_t limits_seconds_to_midnight(int64_t now_ms)
{
	int64_t next_ms = (limits_utc_day(now_ms) + 1) * 86400000;
	return (next_ms - now_ms + 999) / 1000;
}

int64_t limits_retry_after(double s)
{
	double c = ceil(s);
	return c < 1 ? 1 : c > 86400 ? 86400 : (int64_t)c;
}

enum soma_err limits_start(const struct limits_opts *o, struct limits_driver *driver)
{
	limits_stop();
	if (!driver)
		return SOMA_ERR_NOMEM;
	lim.o = *o;
	if (lim.o.requests_per_s > 0 && lim.o.requests_burst <= 0)
		lim.o.requests_burst = 2 * lim.o.requests_per_s;
	if (lim.o.requests_burst > 0 && lim.o.requests_burst < 1)
		lim.o.requests_burst = 1;
	lim.driver = driver;
	return SOMA_OK;
}

enum soma_err limits_start_from_config(void)
{
	struct limits_opts o = {(double)cfg_int(CFG_LIMITS_REQUESTS_PER_S), (double)cfg_int(CFG_LIMITS_REQUESTS_BURST),
				cfg_int(CFG_LIMITS_LLM_TOKENS_PER_DAY), cfg_int(CFG_LIMITS_STREAMS_PER_TENANT)};
	return limits_start(&o, limits_local_new());
}

void limits_stop(void)
{
	if (lim.driver) {
		lim.driver->free(lim.driver->ctx);
		free(lim.driver);
	}
	lim.driver = NULL;
	lim.o = (struct limits_opts){0};
}

void limits_describe(char *out, size_t cap)
{
	if (!lim.driver) {
		snprintf(out, cap, "limits off");
		return;
	}
	char rate[64] = "unlimited", tokens[64] = "unlimited", streams[64] = "unlimited";
	if (lim.o.requests_per_s > 0)
		snprintf(rate, sizeof(rate), "%g/s (burst %g)", lim.o.requests_per_s, lim.o.requests_burst);
	if (lim.o.llm_tokens_per_day > 0)
		snprintf(tokens, sizeof(tokens), "%lld/day", (long long)lim.o.llm_tokens_per_day);
	if (lim.o.streams_per_tenant > 0)
		snprintf(streams, sizeof(streams), "%lld", (long long)lim.o.streams_per_tenant);
	snprintf(out, cap, "per tenant (%s): requests %s, model tokens %s, streams %s", lim.driver->name, rate, tokens,
		 streams);
}

/* The series are cached per thread: no lock after the first rejection of each kind. */
static __thread struct metric_series *rejected_series[3];
static __thread unsigned rejected_gen;

static void rejected(int which)
{
	static const char *const labels[] = {"limit", NULL};
	static const char *const names[] = {"requests", "llm_tokens", "streams"};
	unsigned gen = metrics_generation();
	if (rejected_gen != gen) {
		rejected_series[0] = rejected_series[1] = rejected_series[2] = NULL;
		rejected_gen = gen;
	}
	if (!rejected_series[which]) {
		struct metric_family *f =
			metrics_counter("soma_limits_rejected_total", "Requests refused with 429, by limit.", labels);
		const char *values[] = {names[which]};
		rejected_series[which] = f ? metric_series(f, values) : NULL;
	}
	if (rejected_series[which])
		metric_add(rejected_series[which], 1);
}

bool limits_request(const char *tenant, int64_t *retry_after_s)
{
	if (!lim.driver || lim.o.requests_per_s <= 0)
		return true;
	double wait = 0;
	if (lim.driver->request_take(lim.driver->ctx, tenant, lim.o.requests_per_s, lim.o.requests_burst,
				     clock_mono_ns(), &wait))
		return true;
	*retry_after_s = limits_retry_after(wait);
	rejected(REJ_REQUESTS);
	return false;
}

bool limits_tokens_available(const char *tenant, int64_t *retry_after_s)
{
	if (!lim.driver || lim.o.llm_tokens_per_day <= 0)
		return true;
	int64_t now = clock_wall_ms();
	if (lim.driver->tokens_used(lim.driver->ctx, tenant, limits_utc_day(now)) < lim.o.llm_tokens_per_day)
		return true;
	*retry_after_s = limits_seconds_to_midnight(now);
	rejected(REJ_TOKENS);
	return false;
}

void limits_tokens_add(const char *tenant, int64_t n)
{
	if (lim.driver && lim.o.llm_tokens_per_day > 0 && n > 0)
		lim.driver->tokens_add(lim.driver->ctx, tenant, limits_utc_day(clock_wall_ms()), n);
}

bool limits_stream_acquire(const char *tenant)
{
	if (!lim.driver || lim.o.streams_per_tenant <= 0)
		return true;
	if (lim.driver->stream_acquire(lim.driver->ctx, tenant, lim.o.streams_per_tenant))
		return true;
	rejected(REJ_STREAMS);
	return false;
}

void limits_stream_release(const char *tenant)
{
	if (lim.driver && lim.o.streams_per_tenant > 0)
		lim.driver->stream_release(lim.driver->ctx, tenant);
}

/* ---- HTTP answers ------------------------------------------------------------------------------- */

static void retry_after(struct http_req *req, int64_t s)
{
	char v[24];
	snprintf(v, sizeof(v), "%lld", (long long)s);
	http_resp_header(req, "Retry-After", v);
}

bool limits_http_request(struct http_req *req)
{
	int64_t retry;
	if (limits_request(req->ident.tenant, &retry))
		return true;
	retry_after(req, retry);
	http_respond_error(req, 429, "rate_limited",
			   "tenant %s is over limits.requests_per_s (%g per second, burst %g); retry in %lld s",
			   req->ident.tenant, lim.o.requests_per_s, lim.o.requests_burst, (long long)retry);
	return false;
}

bool limits_http_tokens(struct http_req *req)
{
	int64_t retry;
	if (limits_tokens_available(req->ident.tenant, &retry))
		return true;
	/* Retry-After is honest (midnight UTC), but an SDK that sleeps it and asks again would hang
	 * for hours: x-should-retry says not to, as OpenAI does on an exhausted quota */
	retry_after(req, retry);
	http_resp_header(req, "x-should-retry", "false");
	char message[512];
	snprintf(message, sizeof(message),
		 "tenant %s has used its %lld LLM tokens for today (limits.llm_tokens_per_day); the budget renews at "
		 "00:00 UTC, in %lld s",
		 req->ident.tenant, (long long)lim.o.llm_tokens_per_day, (long long)retry);
	http_respond_error_json(req, 429,
				json_pack("{s:s, s:s, s:s, s:n, s:s}", "code", "llm_budget_exceeded", "type",
					  "insufficient_quota", "message", message, "param", "request_id",
					  req->request_id));
	return false;
}

bool limits_http_stream(struct http_req *req)
{
	if (limits_stream_acquire(req->ident.tenant))
		return true;
	retry_after(req, 5);
	http_respond_error(req, 429, "too_many_streams",
			   "tenant %s already has %lld event streams open (limits.streams_per_tenant); close one "
			   "and retry",
			   req->ident.tenant, (long long)lim.o.streams_per_tenant);
	return false;
}
