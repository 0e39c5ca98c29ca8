/*
 * llm_metrics.c - the provider calls in /metrics: soma_llm_requests_total{kind, outcome},
 * soma_llm_request_duration_seconds{kind}, soma_llm_first_token_seconds{kind} and
 * soma_llm_tokens_total{kind, direction}.
 *
 * DESIGN: counted once per call (not per attempt: a retried call is one request, its duration
 * the whole wait) where the call ends - llm_chat's return, the asynchronous call's done or
 * cancel (client.c, async.c) - so every caller is counted the same way. A call refused before
 * any provider was asked (no key, no libcurl) is not a provider call and is not counted. Labels
 * are bounded: kind is the caller (chat: the conversation task; proxy: /v1/chat/completions;
 * invoke: /v1/llm/invoke), outcome one of five, no model, tenant or session. Every series is
 * created at registration so a rate() starts from 0. Series pointers are cached per metrics
 * generation (metrics_reset in tests drops them); updates are atomics, any thread.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "core/clock.h"
#include "core/metrics.h"
#include "llm/llm.h"

#define KINDS	 3
#define OUTCOMES 5

static const char *const kind_names[KINDS] = {"chat", "proxy", "invoke"};
static const char *const outcome_names[OUTCOMES] = {"ok", "error", "rate_limited", "timeout", "cancelled"};

static struct {
	pthread_mutex_t lock;			      /* guards (re)registration */
	_Atomic unsigned gen;			      /* metrics_generation() + 1 of the series below; 0 none */
	struct metric_series *calls[KINDS][OUTCOMES]; /* soma_llm_requests_total */
	struct metric_series *duration[KINDS];	      /* soma_llm_request_duration_seconds */
	struct metric_series *first[KINDS];	      /* soma_llm_first_token_seconds */
	struct metric_series *tokens[KINDS][2];	      /* soma_llm_tokens_total: prompt, completion */
} M = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void register_locked(void)
{
	static const char *const call_labels[] = {"kind", "outcome", NULL};
	static const char *const kind_label[] = {"kind", NULL};
	static const char *const token_labels[] = {"kind", "direction", NULL};
	static const double dur_buckets[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300};
	static const double first_buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60};
	struct metric_family *calls = metrics_counter("soma_llm_requests_total",
						      "LLM provider calls, by caller (kind) and outcome.", call_labels);
	struct metric_family *duration = metrics_histogram(
		"soma_llm_request_duration_seconds", "Time of one LLM provider call to its end, retries included.",
		kind_label, dur_buckets, sizeof(dur_buckets) / sizeof(dur_buckets[0]));
	struct metric_family *first =
		metrics_histogram("soma_llm_first_token_seconds",
				  "Time from an LLM provider call's start to the first chunk of its reply.", kind_label,
				  first_buckets, sizeof(first_buckets) / sizeof(first_buckets[0]));
	struct metric_family *tokens = metrics_counter(
		"soma_llm_tokens_total", "Tokens the LLM provider reported, by caller and direction.", token_labels);
	for (int k = 0; k < KINDS; k++) {
		for (int o = 0; o < OUTCOMES; o++) {
			const char *v[] = {kind_names[k], outcome_names[o]};
			M.calls[k][o] = calls ? metric_series(calls, v) : NULL;
		}
		const char *kv[] = {kind_names[k]};
		M.duration[k] = duration ? metric_series(duration, kv) : NULL;
		M.first[k] = first ? metric_series(first, kv) : NULL;
		const char *pv[] = {kind_names[k], "prompt"}, *cv[] = {kind_names[k], "completion"};
		M.tokens[k][0] = tokens ? metric_series(tokens, pv) : NULL;
		M.tokens[k][1] = tokens ? metric_series(tokens, cv) : NULL;
	}
}

void llm_metrics_register(void)
{
	unsigned want = metrics_generation() + 1;
	if (atomic_load(&M.gen) == want)
		return;
	pthread_mutex_lock(&M.lock);
	if (atomic_load(&M.gen) != want) {
		register_locked();
		atomic_store(&M.gen, want);
	}
	pthread_mutex_unlock(&M.lock);
}

static int outcome_of(enum llm_error e)
{
	switch (e) {
	case LLM_OK:
		return 0;
	case LLM_ERR_RATE_LIMITED:
		return 2;
	case LLM_ERR_TIMEOUT:
		return 3;
	case LLM_ERR_CANCELLED:
		return 4;
	default:
		return 1;
	}
}

void llm_metrics_call(enum llm_kind kind, const struct llm_result *res, uint64_t started_ns, uint64_t first_ns)
{
	if ((unsigned)kind >= KINDS)
		kind = LLM_KIND_CHAT;
	llm_metrics_register();
	metric_add(M.calls[kind][outcome_of(res->error)], 1);
	uint64_t now = clock_mono_ns();
	if (started_ns && now >= started_ns)
		metric_observe(M.duration[kind], (double)(now - started_ns) / 1e9);
	if (started_ns && first_ns >= started_ns)
		metric_observe(M.first[kind], (double)(first_ns - started_ns) / 1e9);
	if (res->input_tokens > 0)
		metric_add(M.tokens[kind][0], (double)res->input_tokens);
	if (res->output_tokens > 0)
		metric_add(M.tokens[kind][1], (double)res->output_tokens);
}
