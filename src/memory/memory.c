/*
 * memory.c - the memory settings, the one rule of the memory state, the circuit breaker, recall.
 *
 * DESIGN: the state is a pure function of a few facts, all kept here under one mutex:
 *   health   the last /health probe: unknown, up, not ready (2xx without ok/ready/memory_ok),
 *            unreachable (transport error, non-2xx, unparsable)
 *   breaker  consecutive UNAVAILABLE or SERVER_ERROR calls; at memory.breaker_failures it opens for
 *            memory.breaker_open_ms (calls fail fast), then lets one call through (the probe):
 *            success closes it, failure opens it again. /health alone never closes it (a
 *            SomaBrain whose /health is fine may still fail every write)
 *   failure  the time and kind of the last failed call
 * rule():  breaker open or health unreachable -> down; not ready, breaker probing, or a failed
 * call within memory.breaker_open_ms -> degraded; else normal. Every fact change re-applies the rule; a
 * change of state bumps `generation` (event streams watch it) and is logged once.
 * The built-in driver has no /health: it is up while the store answers.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "memory/memory_int.h"

enum health { HEALTH_UNKNOWN, HEALTH_UP, HEALTH_NOT_READY, HEALTH_UNREACHABLE };

struct memory_settings memory_cfg;

static struct {
	pthread_mutex_t lock;		       /* guards everything below */
	enum health health;		       /* last probe */
	char health_detail[MEMORY_REASON_MAX]; /* its reason when not up */
	int failures;			       /* consecutive UNAVAILABLE calls */
	int64_t open_until_ms;		       /* breaker: open until then; 0 = closed */
	bool probing;			       /* breaker: the half-open probe is out */
	int64_t last_failure_ms;	       /* last failed call */
	char failure_what[MEMORY_REASON_MAX];  /* "remember_failure", "recall_failure" */
	struct memory_status st;	       /* the derived status */
	unsigned _Atomic generation;	       /* mirrors st.generation for lock-free readers */
	_Atomic bool degraded;		       /* st.state != MEMORY_NORMAL, for lock-free readers */
} m = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct metric_series *m_pending, *m_oldest, *m_state, *m_recall;
static struct metric_family *m_delivered;

const char *memory_state_name(enum memory_state s)
{
	return s == MEMORY_NORMAL ? "normal" : s == MEMORY_DEGRADED ? "degraded" : "down";
}

/* The one rule (lock held). */
static void rule(int64_t now)
{
	enum memory_state s = MEMORY_NORMAL;
	const char *why = "ok";
	bool open = m.open_until_ms && now < m.open_until_ms;
	if (open)
		s = MEMORY_DOWN, why = "circuit_open";
	else if (m.health == HEALTH_UNREACHABLE)
		s = MEMORY_DOWN, why = m.health_detail;
	else if (m.health == HEALTH_NOT_READY)
		s = MEMORY_DEGRADED, why = m.health_detail;
	else if (m.open_until_ms)
		s = MEMORY_DEGRADED, why = "circuit_half_open";
	else if (m.last_failure_ms && now - m.last_failure_ms < memory_cfg.breaker_open_ms)
		s = MEMORY_DEGRADED, why = m.failure_what;
	bool changed = s != m.st.state;
	snprintf(m.st.reason, sizeof(m.st.reason), "%s", why);
	m.st.probed = m.health != HEALTH_UNKNOWN;
	if (!changed)
		return;
	log_emit(s == MEMORY_NORMAL ? LOG_INFO : LOG_WARN, "memory", NULL, 0, "memory %s -> %s (%s)%s",
		 memory_state_name(m.st.state), memory_state_name(s), why,
		 s == MEMORY_DOWN ? "; writes wait in the outbox, recall is skipped" : "");
	m.st.state = s;
	m.st.since_ms = now;
	m.st.generation++;
	atomic_store(&m.generation, m.st.generation);
	atomic_store(&m.degraded, s != MEMORY_NORMAL);
	if (m_state)
		metric_set(m_state, (double)s);
}

void memory_note_health(enum memory_call r, const char *detail)
{
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&m.lock);
	m.health = r == MEMORY_CALL_OK ? HEALTH_UP : r == MEMORY_CALL_NOT_READY ? HEALTH_NOT_READY : HEALTH_UNREACHABLE;
	snprintf(m.health_detail, sizeof(m.health_detail), "%s", detail ? detail : "");
	rule(now); /* a healthy /health does not close the breaker: only a call that works does */
	pthread_mutex_unlock(&m.lock);
}

bool memory_note_call(enum memory_call r, const char *what)
{
	int64_t now = clock_wall_ms();
	bool opened = false;
	pthread_mutex_lock(&m.lock);
	if (r == MEMORY_CALL_UNAVAILABLE || r == MEMORY_CALL_SERVER_ERROR) {
		bool was_open = m.open_until_ms && now < m.open_until_ms;
		m.last_failure_ms = now;
		snprintf(m.failure_what, sizeof(m.failure_what), "%s", what);
		if (++m.failures >= memory_cfg.breaker_failures || m.probing) {
			m.open_until_ms = now + memory_cfg.breaker_open_ms;
			opened = r == MEMORY_CALL_SERVER_ERROR && !was_open && m.health != HEALTH_UNREACHABLE;
		}
	} else {
		m.failures = 0;
		m.open_until_ms = 0;
	}
	m.probing = false;
	rule(now);
	pthread_mutex_unlock(&m.lock);
	return opened;
}

bool memory_breaker_allows(void)
{
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&m.lock);
	bool ok = !m.open_until_ms;
	if (!ok && now >= m.open_until_ms && !m.probing)
		ok = m.probing = true; /* half-open: this caller is the probe */
	rule(now);
	pthread_mutex_unlock(&m.lock);
	return ok;
}

void memory_note_outbox(int64_t pending, int64_t failed, int64_t oldest_ms)
{
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&m.lock);
	m.st.pending = pending;
	m.st.failed = failed;
	m.st.oldest_ms = oldest_ms;
	rule(now); /* time passes: the breaker's period and the failure window end */
	pthread_mutex_unlock(&m.lock);
	if (m_pending) {
		metric_set(m_pending, (double)pending);
		metric_set(m_oldest, oldest_ms ? (double)(now - oldest_ms) / 1000.0 : 0.0);
	}
}

void memory_count_delivery(const char *result, double n)
{
	if (m_delivered && n > 0)
		metric_add(metric_series(m_delivered, (const char *[]){memory_cfg.driver->name, result}), n);
}

void memory_snapshot(struct memory_status *out)
{
	pthread_mutex_lock(&m.lock);
	*out = m.st;
	pthread_mutex_unlock(&m.lock);
	out->driver = memory_cfg.driver ? memory_cfg.driver->name : "builtin";
}

bool memory_degraded(void)
{
	return atomic_load(&m.degraded);
}

unsigned memory_generation(void)
{
	return atomic_load(&m.generation);
}

enum soma_err memory_init(char *why, size_t cap)
{
	const char *driver = cfg_str(CFG_MEMORY_DRIVER);
	memory_cfg.driver = strcmp(driver, "somabrain") == 0 ? &memory_somabrain_driver : &memory_builtin_driver;
	snprintf(memory_cfg.url, sizeof(memory_cfg.url), "%s", cfg_str(CFG_MEMORY_SOMABRAIN_URL));
	size_t n = strlen(memory_cfg.url);
	while (n && memory_cfg.url[n - 1] == '/')
		memory_cfg.url[--n] = '\0';
	snprintf(memory_cfg.api_key, sizeof(memory_cfg.api_key), "%s", cfg_str(CFG_MEMORY_SOMABRAIN_API_KEY));
	snprintf(memory_cfg.ns, sizeof(memory_cfg.ns), "%s", cfg_str(CFG_MEMORY_NAMESPACE));
	memory_cfg.timeout_ms = (int)cfg_int(CFG_MEMORY_TIMEOUT_MS);
	memory_cfg.max_attempts = (int)cfg_int(CFG_MEMORY_MAX_ATTEMPTS);
	memory_cfg.recall_top_k = (int)cfg_int(CFG_MEMORY_RECALL_TOP_K);
	memory_cfg.rate_per_s = (int)cfg_int(CFG_MEMORY_RELAY_RATE_PER_S);
	memory_cfg.backoff_ms = (int)cfg_int(CFG_MEMORY_RETRY_BACKOFF_MS);
	memory_cfg.breaker_failures = (int)cfg_int(CFG_MEMORY_BREAKER_FAILURES);
	memory_cfg.breaker_open_ms = (int)cfg_int(CFG_MEMORY_BREAKER_OPEN_MS);
	memory_cfg.health_interval_ms = (int)cfg_int(CFG_MEMORY_HEALTH_INTERVAL_MS);
	bool unconfigured = memory_cfg.driver == &memory_somabrain_driver && !memory_cfg.url[0];
	pthread_mutex_lock(&m.lock);
	m.health = memory_cfg.driver == &memory_builtin_driver ? HEALTH_UP : HEALTH_UNKNOWN;
	if (unconfigured) /* down for good: recall skipped, writes kept in the outbox */
		m.health = HEALTH_UNREACHABLE;
	snprintf(m.health_detail, sizeof(m.health_detail), "%s", unconfigured ? "unconfigured" : "");
	m.failures = 0, m.open_until_ms = 0, m.probing = false, m.last_failure_ms = 0;
	m.st.state = MEMORY_NORMAL;
	m.st.since_ms = clock_wall_ms();
	rule(m.st.since_ms);
	pthread_mutex_unlock(&m.lock);
	if (unconfigured) {
		snprintf(why, cap,
			 "memory.driver is somabrain but memory.somabrain_url is empty; set it (e.g. "
			 "http://127.0.0.1:9696) or use memory.driver=builtin");
		return SOMA_ERR_CONFIG;
	}
	return SOMA_OK;
}

void memory_metrics_register(void)
{
	const char *sink[] = {"sink", NULL};
	const char *sink_result[] = {"sink", "result", NULL};
	const char *name = memory_cfg.driver ? memory_cfg.driver->name : "builtin";
	static const double buckets[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
	m_pending = metric_series(metrics_gauge("soma_outbox_pending", "Memory writes waiting in the outbox.", sink),
				  (const char *[]){name});
	m_oldest = metric_series(metrics_gauge("soma_outbox_oldest_age_seconds",
					       "Age of the oldest memory write waiting in the outbox.", sink),
				 (const char *[]){name});
	m_delivered = metrics_counter("soma_outbox_delivered_total",
				      "Memory write deliveries by result (delivered, retry, failed).", sink_result);
	m_state = metric_series(
		metrics_gauge("soma_somabrain_state", "Memory state: 0 normal, 1 degraded, 2 down.", NULL), NULL);
	m_recall = metric_series(metrics_histogram("soma_memory_recall_duration_seconds", "Time of one memory recall.",
						   NULL, buckets, sizeof(buckets) / sizeof(buckets[0])),
				 NULL);
	metric_set(m_state, (double)m.st.state);
}

enum soma_err memory_recall(struct store *st, const char *tenant, const char *ns, const char *query, int top_k,
			    const char *session_id, const char *request_id, const char *traceparent, json_t **results,
			    bool *degraded)
{
	struct memory_status s;
	memory_snapshot(&s);
	*results = NULL;
	*degraded = s.state != MEMORY_NORMAL;
	if (!memory_cfg.driver) /* memory_init has not run (a process without the memory service) */
		s.state = MEMORY_DOWN;
	if (s.state == MEMORY_DEGRADED && top_k > 1)
		top_k /= 2; /* fewer when degraded */
	if (s.state == MEMORY_DOWN || top_k <= 0 || !memory_breaker_allows()) {
		*results = json_array();
		*degraded = *degraded || top_k > 0;
		return *results ? SOMA_OK : SOMA_ERR_NOMEM;
	}
	char err[160] = "", tp[TRACEPARENT_LEN + 1] = "";
	const struct trace_span *cur = traceparent ? NULL : trace_current();
	if (cur && cur->on) /* a task's recall joins the task's trace */
		trace_span_traceparent(cur, tp);
	uint64_t t0 = clock_mono_ns();
	enum memory_call r = memory_cfg.driver->recall(st, tenant, ns && ns[0] ? ns : memory_cfg.ns, query, top_k,
						       session_id, request_id, traceparent ? traceparent : tp, results,
						       degraded, err, sizeof(err));
	if (m_recall)
		metric_observe(m_recall, (double)(clock_mono_ns() - t0) / 1e9);
	memory_note_call(r, "recall_failure");
	if (r == MEMORY_CALL_OK)
		return SOMA_OK;
	log_warn("memory", "recall for tenant %s failed: %s", tenant, err);
	json_decref(*results);
	*results = json_array();
	*degraded = true;
	return *results ? SOMA_OK : SOMA_ERR_NOMEM;
}
