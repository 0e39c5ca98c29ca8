/*
 * opa.c - the OPA engine's wire: POST {opa_url}/v1/data/soma/allow and GET {opa_url}/health.
 *
 * DESIGN: one blocking HTTP exchange on the calling thread's libcurl handle (src/llm/curl_dl.h:
 * kept per thread, so the connection to OPA is reused); callers are policy threads, workers and
 * upload threads, never io threads. The whole exchange has one deadline (policy.opa_timeout_ms,
 * connecting included). Answers follow OPA's Data API (shared/reference/interop.md §4.1):
 * 200 {"result": true|false} or {"result": {"allow": bool, "reason": str}}; 200 without "result"
 * is an undefined decision. Everything that is not a clear allow is a deny whose reason names
 * what happened (fail closed): opa_undefined, opa_bad_result, opa_error (non-2xx), opa_timeout,
 * opa_unreachable. The response body is read up to 64 KiB; more is an opa_bad_result.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/url_shown.h"
#include "llm/curl_dl.h"
#include "policy/policy_int.h"

#define BODY_MAX (64 * 1024)

struct body {
	char *p;       /* received bytes; owned */
	size_t len;    /* used */
	bool overflow; /* more than BODY_MAX arrived */
};

static size_t on_write(char *data, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t len = size * n;
	if (b->len + len > BODY_MAX) {
		b->overflow = true;
		return 0; /* stops the transfer */
	}
	char *grown = realloc(b->p, b->len + len + 1);
	if (!grown)
		return 0;
	memcpy(grown + b->len, data, len);
	b->p = grown;
	b->len += len;
	b->p[b->len] = '\0';
	return len;
}

void policy_opa_parse(long status, const char *body, size_t len, struct policy_decision *out)
{
	if (status < 200 || status > 299) {
		policy_decision_set(out, false, "opa_error", "opa");
		return;
	}
	json_t *root = json_loadb(body ? body : "", len, 0, NULL);
	json_t *result = json_object_get(root, "result");
	if (!json_is_object(root))
		policy_decision_set(out, false, "opa_bad_result", "opa");
	else if (!result)
		policy_decision_set(out, false, "opa_undefined", "opa");
	else if (json_is_boolean(result))
		policy_decision_set(out, json_is_true(result), json_is_true(result) ? "allowed" : "denied", "opa");
	else if (json_is_object(result) && json_is_boolean(json_object_get(result, "allow"))) {
		bool allow = json_is_true(json_object_get(result, "allow"));
		const char *reason = json_string_value(json_object_get(result, "reason"));
		policy_decision_set(out, allow, reason && reason[0] ? reason : allow ? "allowed" : "denied", "opa");
	} else {
		policy_decision_set(out, false, "opa_bad_result", "opa");
	}
	json_decref(root);
}

/* One exchange; *status is the HTTP status (0 when there was none). */
static CURLcode exchange(const char *url, const char *post, long timeout_ms, struct body *b, long *status,
			 const char **why)
{
	const struct curl_api *curl = curl_api_get(why);
	CURL *h = curl ? curl_api_thread_handle() : NULL;
	*status = 0;
	if (!h) {
		if (curl)
			*why = "out of memory for a libcurl handle";
		return CURLE_FAILED_INIT;
	}
	struct curl_slist *headers = NULL;
	if (post) {
		headers = curl->slist_append(headers, "Content-Type: application/json");
		headers = curl->slist_append(headers, "Expect:");
		curl->easy_setopt(h, CURLOPT_POSTFIELDS, post);
		curl->easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	}
	curl->easy_setopt(h, CURLOPT_URL, url);
	curl->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl->easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl->easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
	curl->easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	CURLcode rc = curl->easy_perform(h);
	if (rc == CURLE_OK)
		curl->easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	else
		*why = curl->easy_strerror(rc);
	curl->easy_setopt(h, CURLOPT_HTTPHEADER, NULL); /* the list is freed below */
	curl->slist_free_all(headers);
	return rc;
}

enum policy_opa_link policy_opa_decide(const char *base_url, long timeout_ms, const char *input_json,
				       struct policy_decision *out, char *detail, size_t cap)
{
	char url[1024];
	snprintf(url, sizeof(url), "%s/v1/data/soma/allow", base_url);
	struct body b = {0};
	long status;
	const char *why = "";
	CURLcode rc = exchange(url, input_json, timeout_ms, &b, &status, &why);
	enum policy_opa_link link = OPA_LINK_OK;
	char shown[512]; /* details reach the logs and the public /v1/health: no credentials */
	url_shown(base_url, shown, sizeof(shown));
	if (rc == CURLE_OK) {
		policy_opa_parse(status, b.p, b.len, out);
		snprintf(detail, cap, "opa at %s answered HTTP %ld", shown, status);
	} else if (b.overflow) {
		policy_decision_set(out, false, "opa_bad_result", "opa");
		snprintf(detail, cap, "opa at %s answered more than 64 KiB", shown);
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		policy_decision_set(out, false, "opa_timeout", "opa");
		snprintf(detail, cap, "opa at %s did not answer within policy.opa_timeout_ms (%ld ms)", shown,
			 timeout_ms);
		link = OPA_LINK_DOWN;
	} else {
		policy_decision_set(out, false, "opa_unreachable", "opa");
		snprintf(detail, cap, "opa unreachable at %s (%s); check policy.opa_url", shown, why);
		link = OPA_LINK_DOWN;
	}
	free(b.p);
	return link;
}

bool policy_opa_probe(const char *base_url, long timeout_ms, char *detail, size_t cap)
{
	char url[1024];
	snprintf(url, sizeof(url), "%s/health", base_url);
	struct body b = {0};
	long status;
	const char *why = "";
	CURLcode rc = exchange(url, NULL, timeout_ms, &b, &status, &why);
	free(b.p);
	char shown[512];
	url_shown(base_url, shown, sizeof(shown));
	if (rc == CURLE_OK && status == 200) {
		snprintf(detail, cap, "opa at %s answers", shown);
		return true;
	}
	if (rc == CURLE_OK)
		snprintf(detail, cap,
			 "opa at %s answers HTTP %ld on /health; every decision is denied until it is healthy", shown,
			 status);
	else
		snprintf(detail, cap,
			 "opa unreachable at %s (%s); every decision is denied (fail closed); check policy.opa_url",
			 shown, why);
	return false;
}
