/*
 * somabrain.c - the SomaBrain driver: POST /memory/remember, POST /memory/recall, GET /health
 * (CONTRACTS.md §7) over libcurl (loaded on first use, src/llm/curl_dl.h).
 *
 * DESIGN: every call is blocking and runs on the calling thread's reused easy handle (relay
 * thread, worker threads, the memory API's pool; never an io thread), bounded by
 * memory.timeout_ms in total. Headers: Authorization: Bearer memory.somabrain_api_key (when
 * set), X-Tenant-ID, X-Request-ID (a recall's request id, checked by the gateway; a fresh one
 * for each write: the client-chosen memory key travels in the body only), and the caller's W3C
 * traceparent when it has one (a recall within a traced request or task; none when tracing is off,
 * and none for writes: the outbox keeps no trace context).
 * No header value with a control character is ever sent (header_safe).
 * Outcomes are classified once (memory_int.h); the breaker and the state are the caller's.
 * 401/403/404/405 are UNAVAILABLE, not REJECTED: a wrong memory.somabrain_api_key or
 * memory.somabrain_url fails every write alike, so the rows wait (logged, naming the setting).
 * Reply bodies are read up to RESP_MAX bytes (more is a protocol failure, UNAVAILABLE).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/url_shown.h"
#include "llm/curl_dl.h"
#include "memory/memory_int.h"

#define RESP_MAX      (4u << 20)
#define CONFIG_LOG_MS 10000 /* a configuration fault is logged at most this often (per status) */

struct resp {
	char *buf;   /* body so far; owned */
	size_t len;  /* bytes in buf */
	bool over;   /* more than RESP_MAX */
	long status; /* HTTP status, 0 when none */
};

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;
	size_t len = size * n;
	if (r->len + len > RESP_MAX) {
		r->over = true;
		return 0;
	}
	char *nb = realloc(r->buf, r->len + len + 1);
	if (!nb)
		return 0;
	memcpy(nb + r->len, p, len);
	r->buf = nb;
	r->len += len;
	r->buf[r->len] = '\0';
	return len;
}

/* True when v may be a header value: no control characters (CR or LF would end the header
 * and start another: header injection). */
static bool header_safe(const char *v)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* 401 and 403 (the key), 404 and 405 (the URL) are SomaBrain telling us we are set up wrong,
 * not that this request is wrong: the setting to check, or NULL. */
static const char *config_fault(long status)
{
	if (status == 401 || status == 403)
		return "memory.somabrain_api_key";
	if (status == 404 || status == 405)
		return "memory.somabrain_url";
	return NULL;
}

/* Logs a configuration fault once per CONFIG_LOG_MS, or at once when the status changed (every
 * lane and recall would else repeat it per call). */
static void config_fault_log(long status, const char *what)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static int64_t last_ms;
	static long last_status;
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&lock);
	bool due = status != last_status || now - last_ms >= CONFIG_LOG_MS;
	if (due)
		last_ms = now, last_status = status;
	pthread_mutex_unlock(&lock);
	if (due)
		log_error("memory", "%s; writes wait in the outbox until it is fixed", what);
}

/* One call; body NULL for GET; traceparent NULL or "": none sent. *out receives the parsed JSON
 * reply (may be NULL), *status the HTTP status (0 when there was no answer). */
static enum memory_call call(const char *method, const char *path, const char *tenant, const char *request_id,
			     const char *traceparent, json_t *body, json_t **out, long *status, char *err, size_t cap)
{
	*out = NULL;
	*status = 0;
	char rid_new[IDS_UUID_LEN + 1];
	const char *why = "libcurl is not available";
	const struct curl_api *curl = curl_api_get(&why);
	CURL *h = curl ? curl_api_thread_handle() : NULL;
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	if (!h || (body && !text)) {
		free(text);
		snprintf(err, cap, "%s", h ? "out of memory" : why);
		return MEMORY_CALL_UNAVAILABLE;
	}
	if (!request_id || !request_id[0]) {
		ids_uuid4(rid_new);
		request_id = rid_new;
	}
	if (!header_safe(tenant ? tenant : "") || !header_safe(request_id) || !header_safe(memory_cfg.api_key) ||
	    !header_safe(traceparent ? traceparent : "")) {
		free(text); /* a guard: the callers pass checked values; never send a broken header */
		snprintf(err, cap,
			 "refused to call SomaBrain: a header value (tenant, request id or "
			 "memory.somabrain_api_key) holds a control character");
		return MEMORY_CALL_REJECTED;
	}
	char url[700], auth[600], tid[200], rid[200], trace[100];
	snprintf(url, sizeof(url), "%s%s", memory_cfg.url, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", memory_cfg.api_key);
	snprintf(tid, sizeof(tid), "X-Tenant-ID: %s", tenant ? tenant : "");
	snprintf(rid, sizeof(rid), "X-Request-ID: %s", request_id);
	snprintf(trace, sizeof(trace), "traceparent: %s", traceparent ? traceparent : "");
	struct curl_slist *hs = curl->slist_append(NULL, "Content-Type: application/json");
	hs = curl->slist_append(hs, "Expect:");
	hs = curl->slist_append(hs, tid);
	hs = curl->slist_append(hs, rid);
	if (traceparent && traceparent[0])
		hs = curl->slist_append(hs, trace);
	if (memory_cfg.api_key[0])
		hs = curl->slist_append(hs, auth);
	struct resp r = {0};
	curl->easy_setopt(h, CURLOPT_URL, url);
	curl->easy_setopt(h, CURLOPT_HTTPHEADER, hs);
	if (text)
		curl->easy_setopt(h, CURLOPT_POSTFIELDS, text);
	curl->easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl->easy_setopt(h, CURLOPT_WRITEDATA, &r);
	curl->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl->easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)memory_cfg.timeout_ms);
	curl->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)memory_cfg.timeout_ms);
	curl->easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	CURLcode rc = hs ? curl->easy_perform(h) : CURLE_OUT_OF_MEMORY;
	curl->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
	curl->easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl->slist_free_all(hs);
	free(text);
	enum memory_call res = MEMORY_CALL_OK;
	char shown[512]; /* err reaches the public /v1/health: no user, password or query of the URL */
	url_shown(memory_cfg.url, shown, sizeof(shown));
	if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && r.over)) {
		snprintf(err, cap, "SomaBrain at %s: %s; check memory.somabrain_url", shown, curl->easy_strerror(rc));
		res = MEMORY_CALL_UNAVAILABLE;
	} else if (r.over) {
		snprintf(err, cap, "SomaBrain's reply to %s is larger than %u bytes", path, RESP_MAX);
		res = MEMORY_CALL_UNAVAILABLE;
	} else if (r.status < 200 || r.status > 299) {
		const char *setting = config_fault(r.status);
		if (setting) {
			snprintf(err, cap, "SomaBrain at %s answered %s with HTTP %ld; check %s", shown, path, r.status,
				 setting);
			config_fault_log(r.status, err);
		} else {
			snprintf(err, cap, "SomaBrain answered %s with HTTP %ld: %.80s", path, r.status,
				 r.buf ? r.buf : "");
		}
		bool client = r.status >= 400 && r.status < 500 && r.status != 408 && r.status != 429 && !setting;
		res = client		? MEMORY_CALL_REJECTED
		      : r.status >= 500 ? MEMORY_CALL_SERVER_ERROR
					: MEMORY_CALL_UNAVAILABLE;
	} else {
		*out = r.buf ? json_loadb(r.buf, r.len, 0, NULL) : NULL;
		if (!*out) {
			snprintf(err, cap, "SomaBrain's reply to %s is not JSON", path);
			res = MEMORY_CALL_UNAVAILABLE;
		}
	}
	free(r.buf);
	*status = r.status;
	return res;
}

static void sb_remember(struct store *st, const struct memory_item *items, size_t n, enum memory_call *results,
			char (*err)[160])
{
	(void)st;
	for (size_t i = 0; i < n; i++) {
		const struct memory_item *it = &items[i];
		json_t *body = json_pack("{s:s, s:s, s:s, s:O, s:O?}", "tenant", it->tenant, "namespace", it->ns, "key",
					 it->key, "value", it->value, "tags", it->tags);
		json_t *reply = NULL;
		long status;
		results[i] = body ? call("POST", "/memory/remember", it->tenant, NULL, NULL, body, &reply, &status,
					 err[i], sizeof(err[i]))
				  : MEMORY_CALL_UNAVAILABLE;
		json_decref(body);
		json_decref(reply);
	}
}

static enum memory_call sb_recall(struct store *st, const char *tenant, const char *ns, const char *query, int top_k,
				  const char *session_id, const char *request_id, const char *traceparent, json_t **out,
				  bool *degraded, char *err, size_t cap)
{
	(void)st;
	json_t *body =
		json_pack("{s:s, s:s, s:s, s:i}", "tenant", tenant, "namespace", ns, "query", query, "top_k", top_k);
	if (body && session_id && session_id[0])
		json_object_set_new(body, "session_id", json_string(session_id));
	json_t *reply = NULL;
	long status;
	enum memory_call r =
		body ? call("POST", "/memory/recall", tenant, request_id, traceparent, body, &reply, &status, err, cap)
		     : MEMORY_CALL_UNAVAILABLE;
	json_decref(body);
	if (r != MEMORY_CALL_OK)
		return r;
	json_t *results = json_object_get(reply, "results"), *item;
	size_t i;
	*out = json_array();
	json_array_foreach(results, i, item)
	{
		if ((int)i >= top_k)
			break;
		/* o, not O: a missing score or payload is a new value the result takes over (O took a
		 * second reference to it: a leak per such result) */
		json_t *layer = json_object_get(item, "layer"), *score = json_object_get(item, "score"),
		       *payload = json_object_get(item, "payload");
		json_array_append_new(*out,
				      json_pack("{s:o, s:o, s:s}", "score", score ? json_incref(score) : json_real(0),
						"payload", payload ? json_incref(payload) : json_object(), "source",
						json_is_string(layer) ? json_string_value(layer) : "somabrain"));
	}
	*degraded = *degraded || json_is_true(json_object_get(reply, "degraded"));
	json_decref(reply);
	return MEMORY_CALL_OK;
}

static enum memory_call sb_health(char *detail, size_t cap)
{
	json_t *reply = NULL;
	char err[200];
	long status;
	enum memory_call r = call("GET", "/health", "", NULL, NULL, NULL, &reply, &status, err, sizeof(err));
	if (r != MEMORY_CALL_OK) { /* any non-2xx, unparsable reply or transport error is down */
		if (!status)
			snprintf(detail, cap, "health_unreachable");
		else if (status < 200 || status > 299)
			snprintf(detail, cap, "health_http_%ld", status);
		else
			snprintf(detail, cap, "health_invalid");
		return MEMORY_CALL_UNAVAILABLE;
	}
	bool ok = json_is_true(json_object_get(reply, "ok")), ready = json_is_true(json_object_get(reply, "ready")),
	     mem = json_is_true(json_object_get(reply, "memory_ok"));
	json_decref(reply);
	if (ok && ready && mem) {
		snprintf(detail, cap, "ok");
		return MEMORY_CALL_OK;
	}
	snprintf(detail, cap, "%s", !ok ? "not_ok" : !ready ? "not_ready" : "memory_not_ok");
	return MEMORY_CALL_NOT_READY;
}

const struct memory_driver memory_somabrain_driver = {"somabrain", sb_remember, sb_recall, sb_health};
