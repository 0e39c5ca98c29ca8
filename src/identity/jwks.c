/*
 * jwks.c - the JWKS key set and the thread that keeps it fresh (see jwt_int.h).
 *
 * DESIGN: one thread ("soma-jwks") fetches auth.jwt_jwks_url with libcurl (through the dlopen
 * table of llm/curl_dl.h) at start, then every auth.jwt_jwks_refresh_s seconds, sooner after a
 * failure (2, 4, 8, 16, 30 s), and when an io thread met an unknown kid (jwks_refresh_soon, at
 * most once every 10 s: a stream of forged kids cannot turn into a stream of fetches). The io
 * threads never wait for it: they read the current set under a read lock and answer 401 for
 * a kid it does not have. A fetch or parse that fails keeps the last good set. A transfer is
 * bounded (5 s, JWKS_DOC_MAX bytes, http/https only, no redirects) and aborted by jwks_stop.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/url_shown.h"
#include "identity/jwt_int.h"
#include "llm/curl_dl.h"

#define WAKE_INTERVAL_MS 10000 /* jwks_refresh_soon: at most one fetch per this */
#define FETCH_TIMEOUT_MS 5000  /* one fetch, unless the caller sets its own */
#define BACKOFF_MAX_S	 30

static pthread_rwlock_t set_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct jwt_key *set; /* the current keys; guarded by set_lock */
static size_t nset;	    /* entries in set */
static _Atomic uint64_t generation;

static struct {
	char url[2048];		      /* auth.jwt_jwks_url */
	char shown[2048];	      /* the same for logs and /v1/health: no user, password or query */
	int refresh_s;		      /* auth.jwt_jwks_refresh_s */
	long fetch_timeout_ms;	      /* the limit of one fetch */
	bool running;		      /* the thread exists (main thread only) */
	pthread_t tid;		      /* the thread */
	pthread_mutex_t lock;	      /* guards the fields below */
	pthread_cond_t cv;	      /* wakes the thread; signals the first attempt */
	bool stopping;		      /* the thread should exit */
	bool wake;		      /* fetch now */
	bool attempted;		      /* the first fetch has finished, well or not */
	int64_t loaded_ms;	      /* wall time of the last good fetch; 0 never */
	char error[256];	      /* the last fetch's failure, "" after a good one */
	_Atomic int64_t last_wake_ms; /* monotonic ms of the last honoured wake-up */
	_Atomic bool abort;	      /* aborts a transfer in flight */
} jw = {.lock = PTHREAD_MUTEX_INITIALIZER};

uint64_t jwks_generation(void)
{
	return atomic_load(&generation);
}

static bool same_keys(const struct jwt_key *a, size_t na, const struct jwt_key *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++) {
		if (strcmp(a[i].kid, b[i].kid) != 0 || a[i].type != b[i].type || strcmp(a[i].alg, b[i].alg) != 0 ||
		    a[i].pem_len != b[i].pem_len || memcmp(a[i].pem, b[i].pem, (size_t)a[i].pem_len) != 0)
			return false;
	}
	return true;
}

void jwks_install(const struct jwt_key *keys, size_t n)
{
	struct jwt_key *fresh = n ? malloc(n * sizeof(*fresh)) : NULL;
	if (n && !fresh) {
		log_error("auth", "out of memory installing %zu JWKS key(s); keeping the previous set", n);
		return;
	}
	if (n)
		memcpy(fresh, keys, n * sizeof(*fresh));
	pthread_rwlock_wrlock(&set_lock);
	bool changed = !same_keys(set, nset, fresh, n);
	struct jwt_key *old = set;
	set = fresh;
	nset = n;
	if (changed)
		atomic_fetch_add(&generation, 1);
	pthread_rwlock_unlock(&set_lock);
	free(old);
}

/* With a kid: the key of that kid and of the token's type (RFC 7517 4.5 lets keys of different
 * types share a kid), else one of that kid and another type (the caller then says they do not fit).
 * Without: the one key of the type, or none or several. */
enum jwks_find jwks_key_find(const char *kid, enum jwt_key_type type, struct jwt_key *out)
{
	enum jwks_find found = JWKS_NOT_FOUND;
	bool typed = false; /* (with a kid) what was found is of the token's type */
	pthread_rwlock_rdlock(&set_lock);
	for (size_t i = 0; i < nset && !typed; i++) {
		if (kid ? strcmp(set[i].kid, kid) != 0 || (found == JWKS_FOUND && set[i].type != type)
			: set[i].type != type)
			continue;
		if (!kid && found == JWKS_FOUND) { /* a second candidate for a token without kid */
			found = JWKS_AMBIGUOUS;
			break;
		}
		*out = set[i];
		found = JWKS_FOUND;
		typed = kid && set[i].type == type;
	}
	pthread_rwlock_unlock(&set_lock);
	return found;
}

void jwks_refresh_soon(void)
{
	int64_t now = (int64_t)(clock_mono_ns() / 1000000u), last = atomic_load(&jw.last_wake_ms);
	if (last && now - last < WAKE_INTERVAL_MS)
		return;
	if (!atomic_compare_exchange_strong(&jw.last_wake_ms, &last, now))
		return; /* another thread just did */
	pthread_mutex_lock(&jw.lock);
	jw.wake = true;
	pthread_cond_signal(&jw.cv);
	pthread_mutex_unlock(&jw.lock);
}

/* ---- fetching ------------------------------------------------------------------------------ */

struct body {
	char *buf;	/* JWKS_DOC_MAX bytes */
	size_t len;	/* bytes received */
	bool too_large; /* the document passed JWKS_DOC_MAX */
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;
	if (n > JWKS_DOC_MAX - b->len) {
		b->too_large = true;
		return 0; /* aborts the transfer */
	}
	memcpy(b->buf + b->len, p, n);
	b->len += n;
	return n;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)arg, (void)dt, (void)dn, (void)ut, (void)un;
	return atomic_load(&jw.abort) ? 1 : 0;
}

/* GETs the URL into b; false with why. */
static bool fetch(struct body *b, char *why, size_t cap)
{
	const char *no_curl = NULL;
	const struct curl_api *api = curl_api_get(&no_curl);
	CURL *h = api ? curl_api_thread_handle() : NULL;
	if (!h) {
		snprintf(why, cap, "%s", no_curl ? no_curl : "cannot create a libcurl handle");
		return false;
	}
	struct curl_slist *hdrs = api->slist_append(NULL, "Accept: application/json");
	api->easy_setopt(h, CURLOPT_URL, jw.url);
	api->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	api->easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	api->easy_setopt(h, CURLOPT_USERAGENT, "somaagent/" SOMA_VERSION);
	api->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	api->easy_setopt(h, CURLOPT_TIMEOUT_MS, jw.fetch_timeout_ms);
	api->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, jw.fetch_timeout_ms);
	api->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	api->easy_setopt(h, CURLOPT_WRITEDATA, b);
	api->easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	api->easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	CURLcode rc = api->easy_perform(h);
	long status = 0;
	api->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	api->easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	api->slist_free_all(hdrs);
	if (b->too_large)
		snprintf(why, cap, "the JWKS is larger than %d KB", JWKS_DOC_MAX / 1024);
	else if (rc != CURLE_OK)
		snprintf(why, cap, "%s", api->easy_strerror(rc));
	else if (status != 200)
		snprintf(why, cap, "HTTP status %ld", status);
	return rc == CURLE_OK && status == 200 && !b->too_large;
}

static void log_set(size_t n, const struct jwt_key *keys)
{
	char kids[512] = "";
	size_t pos = 0;
	for (size_t i = 0; i < n && pos + 4 < sizeof(kids); i++) {
		int w = snprintf(kids + pos, sizeof(kids) - pos, "%s%s", i ? ", " : "",
				 keys[i].kid[0] ? keys[i].kid : "-");
		pos += w > 0 ? (size_t)w : 0;
	}
	log_info("auth", "JWKS from %s: %zu key(s) (kid %s)", jw.shown, n, kids);
}

/* One fetch-parse-install round; false with why. */
static bool refresh_once(char *why, size_t cap)
{
	struct body b = {malloc(JWKS_DOC_MAX), 0, false};
	struct jwt_key *keys = malloc(JWKS_MAX_KEYS * sizeof(*keys));
	size_t n = 0;
	bool ok = b.buf && keys;
	if (!ok)
		snprintf(why, cap, "out of memory");
	ok = ok && fetch(&b, why, cap) && jwks_parse(b.buf, b.len, keys, JWKS_MAX_KEYS, &n, why, cap) == SOMA_OK;
	if (ok) {
		uint64_t before = jwks_generation();
		jwks_install(keys, n);
		if (jwks_generation() != before)
			log_set(n, keys);
	}
	free(keys);
	free(b.buf);
	return ok;
}

static void *run(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-jwks");
	int failures = 0;
	pthread_mutex_lock(&jw.lock);
	while (!jw.stopping) {
		jw.wake = false;
		pthread_mutex_unlock(&jw.lock);
		char why[256] = "";
		bool ok = refresh_once(why, sizeof(why));
		pthread_mutex_lock(&jw.lock);
		failures = ok ? 0 : failures + 1;
		int wait_s = jw.refresh_s, backoff = 1 << (failures < 5 ? failures : 5); /* 2, 4, ... 32 s */
		if (!ok && backoff < wait_s)
			wait_s = backoff < BACKOFF_MAX_S ? backoff : BACKOFF_MAX_S;
		if (ok) {
			jw.loaded_ms = clock_wall_ms();
			jw.error[0] = '\0';
		} else if (!jw.stopping) {
			snprintf(jw.error, sizeof(jw.error), "%s", why);
			log_warn("auth",
				 "cannot load the JWKS from %s: %s; keeping %s, retrying in %d s (auth.jwt_jwks_url)",
				 jw.shown, why, jw.loaded_ms ? "the last key set" : "no keys", wait_s);
		}
		jw.attempted = true;
		pthread_cond_broadcast(&jw.cv);
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += wait_s;
		while (!jw.stopping && !jw.wake && pthread_cond_timedwait(&jw.cv, &jw.lock, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&jw.lock);
	return NULL;
}

enum soma_err jwks_start(const char *url, int refresh_s, int wait_ms, int fetch_timeout_ms)
{
	if (jw.running || strlen(url) >= sizeof(jw.url))
		return SOMA_ERR_INVALID;
	snprintf(jw.url, sizeof(jw.url), "%s", url);
	url_shown(url, jw.shown, sizeof(jw.shown));
	jw.refresh_s = refresh_s > 0 ? refresh_s : 300;
	jw.fetch_timeout_ms = fetch_timeout_ms > 0 ? fetch_timeout_ms : FETCH_TIMEOUT_MS;
	jw.stopping = jw.wake = jw.attempted = false;
	jw.loaded_ms = 0;
	jw.error[0] = '\0';
	atomic_store(&jw.abort, false);
	atomic_store(&jw.last_wake_ms, 0);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	int rc = pthread_cond_init(&jw.cv, &attr);
	pthread_condattr_destroy(&attr);
	if (rc != 0)
		return SOMA_ERR_NOMEM;
	if (pthread_create(&jw.tid, NULL, run, NULL) != 0) {
		pthread_cond_destroy(&jw.cv);
		return SOMA_ERR_NOMEM;
	}
	jw.running = true;
	struct timespec until = clock_deadline_in(CLOCK_MONOTONIC, wait_ms);
	pthread_mutex_lock(&jw.lock);
	while (!jw.attempted && pthread_cond_timedwait(&jw.cv, &jw.lock, &until) != ETIMEDOUT)
		;
	if (!jw.attempted)
		log_warn("auth",
			 "the JWKS from %s has not loaded within %d ms; JWTs signed with its keys get 401 "
			 "until it does",
			 jw.shown, wait_ms);
	pthread_mutex_unlock(&jw.lock);
	return SOMA_OK;
}

void jwks_stop(void)
{
	if (jw.running) {
		pthread_mutex_lock(&jw.lock);
		jw.stopping = true;
		atomic_store(&jw.abort, true);
		pthread_cond_broadcast(&jw.cv);
		pthread_mutex_unlock(&jw.lock);
		pthread_join(jw.tid, NULL);
		pthread_cond_destroy(&jw.cv);
		jw.running = false;
	}
	jwks_install(NULL, 0);
}

bool jwks_describe(char *detail, size_t cap)
{
	pthread_rwlock_rdlock(&set_lock);
	size_t n = nset;
	pthread_rwlock_unlock(&set_lock);
	pthread_mutex_lock(&jw.lock);
	int64_t loaded = jw.loaded_ms;
	if (loaded)
		snprintf(detail, cap, "JWKS %zu key(s), loaded %llds ago%s%s", n,
			 (long long)((clock_wall_ms() - loaded) / 1000), jw.error[0] ? "; last refresh failed: " : "",
			 jw.error);
	else
		snprintf(detail, cap, "JWKS from %s not loaded: %s", jw.shown, jw.error[0] ? jw.error : "fetching");
	pthread_mutex_unlock(&jw.lock);
	return loaded != 0;
}
