/*
 * breaker.c - the OPA circuit breaker (see policy_int.h): while OPA fails, decisions are denied
 * at once instead of each holding a policy thread for policy.opa_timeout_ms.
 *
 * DESIGN: closed (open_until 0): every decision may go to OPA. An unreachable OPA (connection
 * refused, reset, nothing answered: certain) opens it at once; a timeout opens it only as the
 * TIMEOUTS_TO_OPEN-th in a row (any answer from OPA starts the count over), because one slow rule
 * evaluation or GC pause of a healthy OPA must not deny every decision on the node for a window,
 * while a hung OPA times out every call and so still opens it after a few (the 4 policy threads
 * time out together). Open for window_ms: decisions are denied at once with the reason that
 * opened it. Once the
 * window is over it is half-open: one decision (the probe) goes to OPA, the others are still
 * denied; the probe's answer closes it, its failure opens it for another window. The health
 * probe's answer (GET /health) closes it too, so it closes without traffic, but leaves the count:
 * an OPA whose /health answers while its decisions hang is opened again by the next timeout. A probe that never
 * reports back is given up after probe_max_ms. open_until is an atomic read without a lock on
 * the closed path (every OPA decision), like the timeout count (stored only when it is not 0); the
 * rest is under a mutex, taken only while OPA fails.
 * soma_policy_opa_circuit_open is 1 while it is open or half-open.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "policy/policy_int.h"

#define TIMEOUTS_TO_OPEN 3 /* judged timeouts in a row (no answer between) that open it */

static struct {
	_Atomic int64_t open_until; /* monotonic ms: open until then; 0 closed */
	_Atomic int timeouts;	    /* judged timeouts since OPA last answered (while closed) */
	pthread_mutex_t lock;	    /* guards the rest */
	int64_t probe_ms;	    /* when the half-open probe went out; 0 none */
	char reason[32];	    /* what opened it (opa_timeout, opa_unreachable) */
	int64_t window_ms;	    /* how long it stays open */
	int64_t probe_max_ms;	    /* a probe out longer than this is given up */
} br = {.lock = PTHREAD_MUTEX_INITIALIZER, .window_ms = 1000, .probe_max_ms = 5000};

static void gauge(double v)
{
	struct metric_family *f =
		metrics_gauge("soma_policy_opa_circuit_open",
			      "1 while the OPA circuit breaker denies decisions at once (OPA failed recently).", NULL);
	struct metric_series *s = f ? metric_series(f, NULL) : NULL;
	if (s)
		metric_set(s, v);
}

void policy_breaker_reset(int64_t window_ms, int64_t probe_max_ms)
{
	pthread_mutex_lock(&br.lock);
	atomic_store(&br.open_until, 0);
	atomic_store(&br.timeouts, 0);
	br.probe_ms = 0;
	br.window_ms = window_ms;
	br.probe_max_ms = probe_max_ms;
	snprintf(br.reason, sizeof(br.reason), "opa_unreachable");
	pthread_mutex_unlock(&br.lock);
	gauge(0);
}

/* Lock held: may a call go now? Sets *probe when it is the half-open probe. */
static bool admits(int64_t now_ms, int64_t until, bool take, bool *probe)
{
	if (now_ms < until)
		return false;
	if (br.probe_ms && now_ms - br.probe_ms < br.probe_max_ms)
		return false;
	if (take) {
		br.probe_ms = now_ms;
		*probe = true;
	}
	return true;
}

static bool check(int64_t now_ms, bool take, bool *probe, char *reason, size_t cap)
{
	if (atomic_load(&br.open_until) == 0)
		return true;
	pthread_mutex_lock(&br.lock);
	int64_t until = atomic_load(&br.open_until);
	bool ok = until == 0 || admits(now_ms, until, take, probe);
	if (!ok)
		snprintf(reason, cap, "%s", br.reason);
	pthread_mutex_unlock(&br.lock);
	return ok;
}

bool policy_breaker_refuses(int64_t now_ms, char *reason, size_t cap)
{
	bool probe = false;
	return !check(now_ms, false, &probe, reason, cap);
}

bool policy_breaker_admit(int64_t now_ms, bool *probe, char *reason, size_t cap)
{
	*probe = false;
	return check(now_ms, true, probe, reason, cap);
}

void policy_breaker_success(void)
{
	if (atomic_load(&br.open_until) == 0)
		return;
	pthread_mutex_lock(&br.lock);
	bool was_open = atomic_exchange(&br.open_until, 0) != 0;
	br.probe_ms = 0;
	pthread_mutex_unlock(&br.lock);
	if (was_open) {
		gauge(0);
		log_info("policy", "opa answers again: circuit closed, decisions go to OPA");
	}
}

void policy_breaker_answered(void)
{
	if (atomic_load(&br.timeouts) != 0)
		atomic_store(&br.timeouts, 0);
	policy_breaker_success();
}

void policy_breaker_failure(int64_t now_ms, const char *reason)
{
	/* closed: a timeout counts, and opens it only as the TIMEOUTS_TO_OPEN-th in a row; open or
	 * half-open (the probe failed, or a call sent before it opened): it opens again at once */
	if (strcmp(reason, "opa_timeout") == 0 && atomic_load(&br.open_until) == 0 &&
	    atomic_fetch_add(&br.timeouts, 1) + 1 < TIMEOUTS_TO_OPEN)
		return;
	pthread_mutex_lock(&br.lock);
	bool was_closed = atomic_exchange(&br.open_until, now_ms + br.window_ms) == 0;
	br.probe_ms = 0;
	snprintf(br.reason, sizeof(br.reason), "%s", reason);
	int64_t window = br.window_ms;
	pthread_mutex_unlock(&br.lock);
	if (was_closed) {
		gauge(1);
		log_warn("policy", "circuit open (%s): decisions are denied at once; one goes to OPA every %lld ms",
			 reason, (long long)window);
	}
}

void policy_breaker_release(void)
{
	if (atomic_load(&br.open_until) == 0)
		return;
	pthread_mutex_lock(&br.lock);
	br.probe_ms = 0;
	pthread_mutex_unlock(&br.lock);
}

bool policy_breaker_open(char *reason, size_t cap)
{
	if (atomic_load(&br.open_until) == 0)
		return false;
	pthread_mutex_lock(&br.lock);
	bool open = atomic_load(&br.open_until) != 0;
	snprintf(reason, cap, "%s", br.reason);
	pthread_mutex_unlock(&br.lock);
	return open;
}
