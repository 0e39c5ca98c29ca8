/*
 * policy.c - the process's policy engine: which one decides, the OPA threads, the cache, the
 * decision metric and the health report (see policy.h).
 *
 * DESIGN: `pol` is written on the main thread by policy_start() before any io or worker thread
 * exists and by policy_stop() after they are gone; in between it is read-only except for the
 * OPA link state (atomics, and a detail string under a mutex) that decisions and probes update.
 * OPA work runs on a small pool (POLICY_THREADS threads, bounded queue): policy_ask() and the
 * health probe submit to it; policy_decide() instead calls OPA on the caller's own (non-io)
 * thread. A saturated pool is a deny (opa_overloaded), never an unbounded queue. A job's deadline
 * starts when it was asked (a job that waited the timeout out is denied without a call) and a
 * job whose client left is skipped; the circuit breaker (breaker.c) denies at once while OPA
 * fails, so an outage never queues waits behind the 4 threads.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/pool.h"
#include "core/url_shown.h"
#include "memory/memory.h"
#include "policy/policy_int.h"

#define POLICY_THREADS	 4
#define POLICY_QUEUE	 1024
#define CACHE_SLOTS	 4096
#define POLICY_FILE_MAX	 (4 << 20)
#define WARN_INTERVAL_MS 5000
#define BREAKER_MS	 1000 /* how long the breaker stays open after a failure */

enum pol_state { ST_UNSET, ST_READY, ST_FAILED };
enum { LINK_UNKNOWN, LINK_UP, LINK_DOWN };

static struct {
	enum pol_state state;	     /* ST_UNSET: compiled-in rules (unit tests, CLI) */
	bool opa;		     /* the engine is OPA (else builtin) */
	struct policy_rules *rules;  /* builtin rules; owned */
	char source[600];	     /* where the rules came from, for health */
	char opa_url[600];	     /* policy.opa_url without a trailing '/' */
	long timeout_ms;	     /* policy.opa_timeout_ms */
	int64_t ttl_ms;		     /* policy.cache_ttl_ms */
	struct policy_cache *cache;  /* NULL when ttl is 0 */
	struct pool *pool;	     /* OPA threads */
	char failure[512];	     /* why policy_start failed */
	_Atomic int link;	     /* LINK_*: OPA's state as last seen */
	_Atomic bool probing;	     /* a health probe is queued or running */
	_Atomic int64_t warned_ms;   /* last fail-closed warning (log rate limit) */
	pthread_mutex_t detail_lock; /* guards link_detail */
	char link_detail[512];	     /* what the last exchange with OPA showed */
} pol = {.detail_lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static struct policy_rules *default_rules; /* for ST_UNSET; lives until exit */

static void load_default(void)
{
	char why[256];
	if (policy_rules_default(&default_rules, why, sizeof(why)) != SOMA_OK)
		log_error("policy", "compiled-in rules do not parse: %s", why);
}

void policy_decision_set(struct policy_decision *d, bool allow, const char *reason, const char *engine)
{
	d->allow = allow;
	d->engine = engine;
	d->unavailable = false;
	size_t i = 0;
	for (; reason[i] && i + 1 < sizeof(d->reason); i++)
		d->reason[i] = (unsigned char)reason[i] < 0x20 || reason[i] == 0x7f ? '_' : reason[i];
	d->reason[i] = '\0';
}

const char *policy_engine_name(void)
{
	return pol.state == ST_READY && pol.opa ? "opa" : "builtin";
}

/* ---- the decision metric ------------------------------------------------------------------------ */

struct series_slot {
	unsigned gen;		 /* metrics generation of the pointer */
	const char *engine;	 /* static string (pointer identity) */
	bool allow;		 /* decision */
	char action[48];	 /* label value */
	struct metric_series *s; /* soma_policy_decisions_total{engine,action,decision} */
};

static __thread struct series_slot series_cache[32];

void policy_count(const char *action, const struct policy_decision *d)
{
	static const char *const labels[] = {"engine", "action", "decision", NULL};
	unsigned gen = metrics_generation();
	size_t h = d->allow;
	for (const char *p = action; *p; p++)
		h = h * 31 + (unsigned char)*p;
	struct series_slot *slot = &series_cache[h % 32];
	if (!slot->s || slot->gen != gen || slot->engine != d->engine || slot->allow != d->allow ||
	    strncmp(slot->action, action, sizeof(slot->action)) != 0) {
		struct metric_family *f = metrics_counter("soma_policy_decisions_total",
							  "Policy decisions, by engine, action and decision.", labels);
		*slot = (struct series_slot){.gen = gen, .engine = d->engine, .allow = d->allow};
		snprintf(slot->action, sizeof(slot->action), "%s", action);
		const char *values[] = {d->engine, slot->action, d->allow ? "allow" : "deny"};
		slot->s = f ? metric_series(f, values) : NULL;
	}
	if (slot->s)
		metric_add(slot->s, 1);
}

/* ---- the input ------------------------------------------------------------------------------------ */

json_t *policy_input_json(const struct policy_input *in)
{
	json_t *scopes = json_array();
	for (const char *p = in->scopes ? in->scopes : ""; *p;) {
		while (*p == ' ')
			p++;
		size_t len = strcspn(p, " ");
		if (len)
			json_array_append_new(scopes, json_stringn(p, len));
		p += len;
	}
	json_t *ctx = json_is_object(in->context) ? json_incref(in->context) : json_object();
	return json_pack("{s:s, s:s, s:s?, s:o, s:s, s:s, s:o, s:{s:b}}", "tenant", in->tenant ? in->tenant : "",
			 "subject", in->subject ? in->subject : "", "persona_id", in->persona_id, "scopes", scopes,
			 "action", in->action ? in->action : "", "resource", in->resource ? in->resource : "",
			 "context", ctx, "degraded", "somabrain", in->somabrain_degraded || memory_degraded());
}

/* {"input": ...} as sent to OPA and used as the cache key; caller frees. */
static char *request_text(const struct policy_input *in)
{
	json_t *body = json_pack("{s:o}", "input", policy_input_json(in));
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(body);
	return text;
}

/* ---- OPA ---------------------------------------------------------------------------------------- */

static void set_link(int link, const char *detail)
{
	atomic_store(&pol.link, link);
	pthread_mutex_lock(&pol.detail_lock);
	snprintf(pol.link_detail, sizeof(pol.link_detail), "%s", detail);
	pthread_mutex_unlock(&pol.detail_lock);
}

static int64_t mono_ms(void)
{
	return (int64_t)(clock_mono_ns() / 1000000);
}

/* The breaker's deny: at once, with the reason that opened it. */
static void breaker_deny(struct policy_decision *out, const char *reason)
{
	policy_decision_set(out, false, reason, "opa");
	out->unavailable = true;
}

/* Asks OPA on this thread within budget_ms (at most policy.opa_timeout_ms) unless the breaker
 * refuses; caches what OPA itself decided (not transport failures). */
static void opa_call(const char *text, long budget_ms, struct policy_decision *out)
{
	char detail[512], why[32];
	bool probe;
	if (!policy_breaker_admit(mono_ms(), &probe, why, sizeof(why))) {
		breaker_deny(out, why);
		return;
	}
	enum policy_opa_link link = policy_opa_decide(pol.opa_url, budget_ms, text, out, detail, sizeof(detail));
	bool failed = strcmp(out->reason, "opa_error") == 0 || strcmp(out->reason, "opa_bad_result") == 0;
	/* a timeout within a budget the queue cut to less than half says little about OPA */
	bool judged = strcmp(out->reason, "opa_timeout") != 0 || budget_ms * 2 >= pol.timeout_ms;
	if (link == OPA_LINK_OK) {
		policy_breaker_answered();
		if (atomic_load(&pol.link) != LINK_UP)
			set_link(LINK_UP, detail);
	} else if (judged) {
		policy_breaker_failure(mono_ms(), out->reason);
		set_link(LINK_DOWN, detail);
	} else {
		policy_breaker_release();
	}
	if (link == OPA_LINK_OK && !failed) {
		policy_cache_put(pol.cache, text, clock_wall_ms(), out);
		return;
	}
	int64_t now = clock_wall_ms(), last = atomic_load(&pol.warned_ms);
	if (now - last >= WARN_INTERVAL_MS && atomic_compare_exchange_strong(&pol.warned_ms, &last, now))
		log_warn("policy", "denying (fail closed): %s; %s", out->reason, detail);
}

bool policy_decide_now(const struct policy_input *in, struct policy_decision *out)
{
	const char *action = in->action ? in->action : "";
	if (pol.state == ST_UNSET) {
		pthread_once(&default_once, load_default);
		if (default_rules)
			policy_rules_decide(default_rules, in, out);
		else
			policy_decision_set(out, false, "policy_unavailable", "builtin");
	} else if (pol.state == ST_FAILED) {
		policy_decision_set(out, false, "policy_unavailable", pol.opa ? "opa" : "builtin");
	} else if (!pol.opa) {
		policy_rules_decide(pol.rules, in, out);
	} else {
		char *text = pol.cache ? request_text(in) : NULL;
		bool hit = text && policy_cache_get(pol.cache, text, clock_wall_ms(), out);
		free(text);
		char why[32];
		if (!hit && !policy_breaker_refuses(mono_ms(), why, sizeof(why)))
			return false;
		if (!hit)
			breaker_deny(out, why);
	}
	policy_count(action, out);
	return true;
}

void policy_decide(const struct policy_input *in, struct policy_decision *out)
{
	if (policy_decide_now(in, out))
		return;
	char *text = request_text(in);
	if (text)
		opa_call(text, pol.timeout_ms, out);
	else
		policy_decision_set(out, false, "opa_overloaded", "opa"); /* out of memory: fail closed */
	free(text);
	policy_count(in->action ? in->action : "", out);
}

struct ask {
	char *text;		  /* request body; owned */
	char action[64];	  /* metric label */
	policy_done_fn done;	  /* caller's callback */
	void *arg;		  /* its argument */
	const _Atomic bool *gone; /* the caller's "client left" flag, or NULL */
	int64_t asked_ms;	  /* monotonic: when it was asked (its deadline counts from there) */
};

static void run_ask(void *arg)
{
	struct ask *a = arg;
	struct policy_decision d;
	int64_t waited = mono_ms() - a->asked_ms;
	if (a->gone && atomic_load(a->gone)) {
		policy_decision_set(&d, false, "client_gone", "opa"); /* nobody to answer: not asked, not counted */
	} else {
		if (waited >= pol.timeout_ms)
			policy_decision_set(&d, false, "opa_timeout", "opa"); /* the timeout passed in the queue */
		else
			opa_call(a->text, pol.timeout_ms - (long)waited, &d);
		policy_count(a->action, &d);
	}
	a->done(a->arg, &d);
	free(a->text);
	free(a);
}

enum soma_err policy_ask(const struct policy_input *in, policy_done_fn done, void *arg, const _Atomic bool *gone)
{
	if (pol.state != ST_READY || !pol.opa || !pol.pool)
		return SOMA_ERR_UNAVAILABLE;
	struct ask *a = calloc(1, sizeof(*a));
	if (!a || !(a->text = request_text(in))) {
		free(a);
		return SOMA_ERR_UNAVAILABLE;
	}
	snprintf(a->action, sizeof(a->action), "%s", in->action ? in->action : "");
	a->done = done;
	a->arg = arg;
	a->gone = gone;
	a->asked_ms = mono_ms();
	if (pool_submit(pol.pool, run_ask, a) != SOMA_OK) {
		free(a->text);
		free(a);
		return SOMA_ERR_UNAVAILABLE;
	}
	return SOMA_OK;
}

/* ---- start, stop, health --------------------------------------------------------------------------- */

static enum soma_err load_file(const char *path, char *why, size_t cap)
{
	FILE *f = fopen(path, "rb");
	char *text = f ? malloc(POLICY_FILE_MAX + 1) : NULL;
	size_t len = text ? fread(text, 1, POLICY_FILE_MAX + 1, f) : 0;
	if (f)
		fclose(f);
	if (!text || len > POLICY_FILE_MAX) {
		snprintf(why, cap, "cannot read policy.file %s (%s); check the path", path,
			 !f	? "cannot open it"
			 : text ? "larger than 4 MiB"
				: "out of memory");
		free(text);
		return SOMA_ERR_CONFIG;
	}
	char inner[400];
	enum soma_err err = policy_rules_parse(text, len, &pol.rules, inner, sizeof(inner));
	free(text);
	if (err != SOMA_OK)
		snprintf(why, cap, "policy.file %s: %s", path, inner);
	return err;
}

static enum soma_err start_engine(char *why, size_t cap)
{
	pol.opa = strcmp(cfg_str(CFG_POLICY_ENGINE), "opa") == 0;
	if (!pol.opa) {
		const char *path = cfg_str(CFG_POLICY_FILE);
		snprintf(pol.source, sizeof(pol.source), "%s", path[0] ? path : "policy/default.json (compiled in)");
		if (path[0])
			return load_file(path, why, cap);
		char inner[400];
		enum soma_err err = policy_rules_default(&pol.rules, inner, sizeof(inner));
		if (err != SOMA_OK)
			snprintf(why, cap, "compiled-in rules: %s", inner);
		return err;
	}
	const char *url = cfg_str(CFG_POLICY_OPA_URL);
	if (!url[0]) {
		snprintf(why, cap, "policy.engine = opa needs policy.opa_url (e.g. http://127.0.0.1:8181)");
		return SOMA_ERR_CONFIG;
	}
	snprintf(pol.opa_url, sizeof(pol.opa_url), "%s", url);
	for (size_t n = strlen(pol.opa_url); n > 0 && pol.opa_url[n - 1] == '/'; n--)
		pol.opa_url[n - 1] = '\0';
	pol.timeout_ms = (long)cfg_int(CFG_POLICY_OPA_TIMEOUT_MS);
	pol.ttl_ms = cfg_int(CFG_POLICY_CACHE_TTL_MS);
	pol.cache = policy_cache_new(CACHE_SLOTS, pol.ttl_ms);
	pol.pool = pool_new(POLICY_THREADS, POLICY_QUEUE);
	policy_breaker_reset(BREAKER_MS, BREAKER_MS + 2 * pol.timeout_ms);
	if (!pol.pool || (pol.ttl_ms > 0 && !pol.cache)) {
		snprintf(why, cap, "out of memory for the policy threads");
		return SOMA_ERR_NOMEM;
	}
	return SOMA_OK;
}

enum soma_err policy_start(char *why, size_t cap)
{
	policy_stop();
	atomic_store(&pol.link, LINK_UNKNOWN);
	set_link(LINK_UNKNOWN, "not asked yet");
	enum soma_err err = start_engine(why, cap);
	pol.state = err == SOMA_OK ? ST_READY : ST_FAILED;
	if (err != SOMA_OK) {
		snprintf(pol.failure, sizeof(pol.failure), "%s; every decision is denied until this is fixed", why);
		return err;
	}
	if (pol.opa) {
		char shown[512];
		url_shown(pol.opa_url, shown, sizeof(shown));
		log_info("policy", "engine opa at %s (timeout %ld ms, cache %lld ms)", shown, pol.timeout_ms,
			 (long long)pol.ttl_ms);
	} else {
		log_info("policy", "engine builtin: %zu tenant rule(s) from %s", pol.rules->n, pol.source);
	}
	return SOMA_OK;
}

void policy_stop(void)
{
	pool_free(pol.pool); /* queued decisions and probes finish first */
	pol.pool = NULL;
	policy_cache_free(pol.cache);
	pol.cache = NULL;
	policy_rules_free(pol.rules);
	pol.rules = NULL;
	if (pol.state != ST_UNSET) {
		pol.state = ST_FAILED;
		snprintf(pol.failure, sizeof(pol.failure), "the policy engine is stopped");
	}
}

static void run_probe(void *arg)
{
	(void)arg;
	char detail[512];
	bool up = policy_opa_probe(pol.opa_url, pol.timeout_ms, detail, sizeof(detail));
	set_link(up ? LINK_UP : LINK_DOWN, detail);
	if (up)
		policy_breaker_success();
	atomic_store(&pol.probing, false);
}

bool policy_health(char *detail, size_t cap)
{
	if (pol.state != ST_READY) {
		snprintf(detail, cap, "%s", pol.state == ST_UNSET ? "not started" : pol.failure);
		return false;
	}
	if (!pol.opa) {
		snprintf(detail, cap, "builtin: %zu tenant rule(s) from %s", pol.rules->n, pol.source);
		return true;
	}
	/* the report is the link as last seen; the probe queued after reading it refreshes it for the
	 * next report (queued first, a quick probe could change the answer under this one) */
	int link = atomic_load(&pol.link);
	char why[32], circuit[160] = "";
	bool open = policy_breaker_open(why, sizeof(why));
	if (open)
		snprintf(circuit, sizeof(circuit),
			 "circuit open (%s): decisions are denied at once, one goes to OPA every %d ms; ", why,
			 BREAKER_MS);
	pthread_mutex_lock(&pol.detail_lock);
	if (link == LINK_UNKNOWN) {
		char shown[512]; /* /v1/health is public: no user, password or query of the URL */
		url_shown(pol.opa_url, shown, sizeof(shown));
		snprintf(detail, cap, "%sopa at %s: not checked yet", circuit, shown);
	} else {
		snprintf(detail, cap, "%s%s", circuit, pol.link_detail);
	}
	pthread_mutex_unlock(&pol.detail_lock);
	bool idle = false;
	if (atomic_compare_exchange_strong(&pol.probing, &idle, true) &&
	    pool_submit(pol.pool, run_probe, NULL) != SOMA_OK)
		atomic_store(&pol.probing, false);
	return link != LINK_DOWN && !open;
}
