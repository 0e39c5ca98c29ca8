/*
 * test_limits.c - per-tenant limits (src/limits): the token bucket's arithmetic, the UTC day and
 * Retry-After, the in-process driver (rate, tokens by day, streams, eviction), and the process's
 * limits as the gateway uses them (off until started, 0 = unlimited, the rejection metric).
 *
 * DESIGN: the bucket is tested with explicit clocks (no sleeping); the process-wide limits with
 * rates small enough that the real clock cannot refill a token during a test.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"
#include "limits/limits.h"

#define S (1000000000ull) /* one second in ns */

Test(limits, bucket_starts_full_and_refills_at_the_rate)
{
	struct limits_bucket b = {0};
	double retry = 0;
	uint64_t t = 5 * S;
	for (int i = 0; i < 4; i++)
		cr_assert(limits_bucket_take(&b, 2, 4, t, &retry), "burst of 4: request %d", i);
	cr_assert_not(limits_bucket_take(&b, 2, 4, t, &retry));
	cr_assert_float_eq(retry, 0.5, 1e-9, "one token every 0.5 s: %f", retry);
	cr_assert_not(limits_bucket_take(&b, 2, 4, t + S / 4, &retry));
	cr_assert_float_eq(retry, 0.25, 1e-9, "%f", retry);
	cr_assert(limits_bucket_take(&b, 2, 4, t + S / 2, &retry), "refilled one");
	cr_assert_not(limits_bucket_take(&b, 2, 4, t + S / 2, &retry));
	/* a long pause refills to the burst, never beyond */
	for (int i = 0; i < 4; i++)
		cr_assert(limits_bucket_take(&b, 2, 4, t + 100 * S, &retry));
	cr_assert_not(limits_bucket_take(&b, 2, 4, t + 100 * S, &retry));
	/* a clock that goes back does not refill */
	cr_assert_not(limits_bucket_take(&b, 2, 4, t, &retry));
}

Test(limits, slow_rates_wait_long)
{
	struct limits_bucket b = {0};
	double retry = 0;
	cr_assert(limits_bucket_take(&b, 0.1, 1, S, &retry));
	cr_assert_not(limits_bucket_take(&b, 0.1, 1, S, &retry));
	cr_assert_float_eq(retry, 10.0, 1e-9, "%f", retry);
}

Test(limits, retry_after_rounds_up_to_whole_seconds)
{
	cr_assert_eq(limits_retry_after(0.001), 1);
	cr_assert_eq(limits_retry_after(0), 1);
	cr_assert_eq(limits_retry_after(1.0), 1);
	cr_assert_eq(limits_retry_after(1.01), 2);
	cr_assert_eq(limits_retry_after(59.5), 60);
	cr_assert_eq(limits_retry_after(1e12), 86400);
}

Test(limits, utc_day_and_seconds_to_midnight)
{
	int64_t day = 20000, midnight = day * 86400000LL;
	cr_assert_eq(limits_utc_day(midnight), day);
	cr_assert_eq(limits_utc_day(midnight - 1), day - 1);
	cr_assert_eq(limits_seconds_to_midnight(midnight), 86400);
	cr_assert_eq(limits_seconds_to_midnight(midnight - 1), 1);
	cr_assert_eq(limits_seconds_to_midnight(midnight - 1000), 1);
	cr_assert_eq(limits_seconds_to_midnight(midnight - 1001), 2);
	cr_assert_eq(limits_seconds_to_midnight(midnight + 3600 * 1000), 86400 - 3600);
}

Test(limits, local_driver_keeps_tenants_apart)
{
	struct limits_driver *d = limits_local_new();
	cr_assert_not_null(d);
	double retry;
	cr_assert(d->request_take(d->ctx, "a", 1, 1, S, &retry));
	cr_assert_not(d->request_take(d->ctx, "a", 1, 1, S, &retry));
	cr_assert(d->request_take(d->ctx, "b", 1, 1, S, &retry), "b has its own bucket");
	cr_assert(d->request_take(d->ctx, "a", 1, 1, 2 * S, &retry));
	/* tokens count per UTC day */
	cr_assert_eq(d->tokens_used(d->ctx, "a", 7), 0);
	d->tokens_add(d->ctx, "a", 7, 30);
	d->tokens_add(d->ctx, "a", 7, 12);
	cr_assert_eq(d->tokens_used(d->ctx, "a", 7), 42);
	cr_assert_eq(d->tokens_used(d->ctx, "b", 7), 0);
	cr_assert_eq(d->tokens_used(d->ctx, "a", 8), 0, "a new day starts at zero");
	d->tokens_add(d->ctx, "a", 8, 5);
	cr_assert_eq(d->tokens_used(d->ctx, "a", 8), 5);
	/* streams */
	cr_assert(d->stream_acquire(d->ctx, "a", 2));
	cr_assert(d->stream_acquire(d->ctx, "a", 2));
	cr_assert_not(d->stream_acquire(d->ctx, "a", 2));
	cr_assert(d->stream_acquire(d->ctx, "b", 2));
	d->stream_release(d->ctx, "a");
	cr_assert(d->stream_acquire(d->ctx, "a", 2));
	d->stream_release(d->ctx, "nobody"); /* harmless */
	d->free(d->ctx);
	free(d);
}

Test(limits, many_tenants_evict_idle_ones_but_never_open_streams)
{
	struct limits_driver *d = limits_local_new();
	char t[32];
	/* far more tenants than slots: every lookup still answers */
	for (int i = 0; i < 40000; i++) {
		snprintf(t, sizeof(t), "tenant-%d", i);
		double retry;
		cr_assert(d->request_take(d->ctx, t, 1, 1, S + (uint64_t)i, &retry));
	}
	/* a tenant holding a stream keeps its count through another flood */
	cr_assert(d->stream_acquire(d->ctx, "holder", 1));
	for (int i = 0; i < 40000; i++) {
		snprintf(t, sizeof(t), "other-%d", i);
		double retry;
		(void)d->request_take(d->ctx, t, 1, 1, 2 * S + (uint64_t)i, &retry);
	}
	cr_assert_not(d->stream_acquire(d->ctx, "holder", 1), "the open stream is still counted");
	d->stream_release(d->ctx, "holder");
	cr_assert(d->stream_acquire(d->ctx, "holder", 1));
	d->free(d->ctx);
	free(d);
}

/* A flood of other tenants (here 100,000, many in acme's shard) resets none of acme's counters:
 * the fixed table before took over the least recently seen slot, so 16 tenants hashing near acme
 * set its day's tokens back to 0. Entries at rest are swept as the flood goes on. */
Test(limits, a_flood_of_tenants_resets_no_tenant_s_budget_or_rate)
{
	struct limits_driver *d = limits_local_new();
	double retry;
	d->tokens_add(d->ctx, "acme", 20000, 1000000);
	cr_assert(d->request_take(d->ctx, "acme", 0.001, 1, S, &retry));
	cr_assert_not(d->request_take(d->ctx, "acme", 0.001, 1, S, &retry), "acme's bucket is empty");
	char t[32];
	for (int i = 0; i < 100000; i++) {
		snprintf(t, sizeof(t), "flood-%d", i);
		d->tokens_add(d->ctx, t, 20000, 1);
		(void)d->request_take(d->ctx, t, 1000, 1, S, &retry);
		cr_assert_eq(d->tokens_used(d->ctx, t, 20000), 1);
	}
	cr_assert_eq(d->tokens_used(d->ctx, "acme", 20000), 1000000);
	cr_assert_not(d->request_take(d->ctx, "acme", 0.001, 1, S + 1000, &retry), "acme's bucket is still empty");
	cr_assert_eq(d->tokens_used(d->ctx, "nobody", 20000), 0, "a read creates nothing and finds nothing");
	d->free(d->ctx);
	free(d);
}

Test(limits, off_until_started_and_zero_is_unlimited)
{
	int64_t retry = 0;
	for (int i = 0; i < 100; i++)
		cr_assert(limits_request("t", &retry));
	cr_assert(limits_tokens_available("t", &retry));
	cr_assert(limits_stream_acquire("t"));
	limits_stream_release("t");
	char text[256];
	limits_describe(text, sizeof(text));
	cr_assert_str_eq(text, "limits off");
	struct limits_opts o = {0};
	cr_assert_eq(limits_start(&o, limits_local_new()), SOMA_OK);
	for (int i = 0; i < 100; i++)
		cr_assert(limits_request("t", &retry));
	limits_tokens_add("t", 1000000);
	cr_assert(limits_tokens_available("t", &retry));
	for (int i = 0; i < 100; i++)
		cr_assert(limits_stream_acquire("t"));
	limits_describe(text, sizeof(text));
	cr_assert(strstr(text, "requests unlimited") && strstr(text, "streams unlimited"), "%s", text);
	limits_stop();
}

Test(limits, process_limits_refuse_with_a_retry_after)
{
	struct limits_opts o = {.requests_per_s = 0.01, .llm_tokens_per_day = 100, .streams_per_tenant = 1};
	cr_assert_eq(limits_start(&o, limits_local_new()), SOMA_OK);
	int64_t retry = 0;
	cr_assert(limits_request("t", &retry), "burst 0 -> twice the rate, at least 1");
	cr_assert_not(limits_request("t", &retry));
	cr_assert(retry >= 99 && retry <= 100, "%lld", (long long)retry);
	cr_assert(limits_request("u", &retry), "other tenants are not affected");
	/* tokens: under the budget until it is used up */
	cr_assert(limits_tokens_available("t", &retry));
	limits_tokens_add("t", 60);
	limits_tokens_add("t", 0);
	limits_tokens_add("t", -5);
	cr_assert(limits_tokens_available("t", &retry));
	limits_tokens_add("t", 40);
	cr_assert_not(limits_tokens_available("t", &retry));
	cr_assert(retry >= 1 && retry <= 86400, "%lld", (long long)retry);
	cr_assert(limits_tokens_available("u", &retry));
	/* streams */
	cr_assert(limits_stream_acquire("t"));
	cr_assert_not(limits_stream_acquire("t"));
	limits_stream_release("t");
	cr_assert(limits_stream_acquire("t"));
	char text[256];
	limits_describe(text, sizeof(text));
	cr_assert(strstr(text, "100/day") && strstr(text, "local"), "%s", text);
	char *m;
	size_t len;
	cr_assert_eq(metrics_render(&m, &len), SOMA_OK);
	cr_assert(strstr(m, "soma_limits_rejected_total{limit=\"requests\"} 1"), "%s", m);
	cr_assert(strstr(m, "soma_limits_rejected_total{limit=\"llm_tokens\"} 1"), "%s", m);
	cr_assert(strstr(m, "soma_limits_rejected_total{limit=\"streams\"} 1"), "%s", m);
	free(m);
	limits_stop();
}

Test(limits, a_driver_that_cannot_be_made_is_an_error)
{
	struct limits_opts o = {.requests_per_s = 1};
	cr_assert_eq(limits_start(&o, NULL), SOMA_ERR_NOMEM);
	int64_t retry;
	cr_assert(limits_request("t", &retry), "nothing enforced");
}
