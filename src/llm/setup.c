/*
 * setup.c - what every provider call with the same settings sends alike (struct llm_setup,
 * llm_int.h): the provider URL parsed once for libcurl, the constant header lists, and for a
 * plain-HTTP provider at a literal address the parsed target and the request heads that
 * h1_conn.c sends (async.c's direct path).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/str_copy.h"
#include "llm/llm_int.h"

/* The request headers: the constant ones, then traceparent when given. NULL on OOM. */
struct curl_slist *llm_build_headers(const struct llm_config *cfg, bool stream, const char *traceparent)
{
	const struct curl_api *curl = curl_api_get(NULL);
	char auth[600];
	size_t n = str_copy(auth, sizeof(auth), "Authorization: Bearer ");
	str_copy(auth + n, sizeof(auth) - n, cfg->api_key);
	/* libcurl would ask for 100-continue on larger bodies and wait a round trip for it: "Expect:" */
	const char *lines[] = {"Content-Type: application/json", auth,
			       "Expect:", stream ? "Accept: text/event-stream" : NULL};
	char tp[80]; /* "traceparent: " + 55 characters */
	struct curl_slist *headers = NULL;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]) && lines[i]; i++) {
		struct curl_slist *grown = curl->slist_append(headers, lines[i]);
		if (!grown)
			goto fail;
		headers = grown;
	}
	if (traceparent && snprintf(tp, sizeof(tp), "traceparent: %s", traceparent) > 0 &&
	    !curl->slist_append(headers, tp))
		goto fail;
	return headers;
fail:
	curl->slist_free_all(headers);
	return NULL;
}

/* Whether text is visible ASCII or spaces only (fit for a header value as it is). */
static bool printable(const char *text)
{
	for (; *text; text++) {
		if ((unsigned char)*text < ' ' || (unsigned char)*text >= 0x7f)
			return false;
	}
	return true;
}

/* The head of a direct request up to its per-call lines (traceparent, Content-Length): the same
 * headers libcurl sends from the lists above. Owned by the caller; NULL on OOM. */
static char *h1_head_text(const struct llm_setup *s, bool stream, size_t *len)
{
	const char *fmt = "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
			  "Authorization: Bearer %s\r\nAccept: %s\r\n";
	const char *accept = stream ? "text/event-stream" : "*/*";
	int n = snprintf(NULL, 0, fmt, s->target.path, s->target.authority, s->cfg.api_key, accept);
	char *text = n > 0 ? malloc((size_t)n + 1) : NULL;
	if (text)
		snprintf(text, (size_t)n + 1, fmt, s->target.path, s->target.authority, s->cfg.api_key, accept);
	*len = text ? (size_t)n : 0;
	return text;
}

struct llm_setup *llm_setup_new(const struct llm_config *cfg)
{
	const struct curl_api *curl = curl_api_get(NULL);
	struct llm_setup *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->cfg = *cfg;
	s->refs = 1;
	size_t n = str_copy(s->url_text, sizeof(s->url_text), cfg->base_url);
	str_copy(s->url_text + n, sizeof(s->url_text) - n, "/chat/completions");
	s->headers[0] = llm_build_headers(cfg, false, NULL);
	s->headers[1] = llm_build_headers(cfg, true, NULL);
	/* parsed as CURLOPT_URL parses; a URL it refuses is left to CURLOPT_URL, which reports it */
	s->url = curl->url();
	if (s->url &&
	    curl->url_set(s->url, CURLUPART_URL, s->url_text, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME)) {
		curl->url_cleanup(s->url);
		s->url = NULL;
	}
	/* a plain-HTTP provider at a literal address with no proxy in the way: async.c's direct path */
	s->direct = !cfg->env_proxy && printable(cfg->api_key) && h1_target_parse(s->url_text, &s->target);
	for (int stream = 0; s->direct && stream < 2; stream++)
		s->h1_head[stream] = h1_head_text(s, stream, &s->h1_head_len[stream]);
	if (!s->headers[0] || !s->headers[1] || (s->direct && (!s->h1_head[0] || !s->h1_head[1]))) {
		llm_setup_unref(s);
		return NULL;
	}
	return s;
}

bool llm_setup_matches(const struct llm_setup *s, const struct llm_config *cfg)
{
	return s->cfg.connect_timeout_s == cfg->connect_timeout_s && s->cfg.timeout_s == cfg->timeout_s &&
	       s->cfg.env_proxy == cfg->env_proxy && strcmp(s->cfg.base_url, cfg->base_url) == 0 &&
	       strcmp(s->cfg.api_key, cfg->api_key) == 0;
}

void llm_setup_unref(struct llm_setup *s)
{
	if (!s || --s->refs > 0)
		return;
	const struct curl_api *curl = curl_api_get(NULL);
	if (s->url)
		curl->url_cleanup(s->url);
	curl->slist_free_all(s->headers[0]);
	curl->slist_free_all(s->headers[1]);
	free(s->h1_head[0]);
	free(s->h1_head[1]);
	free(s);
}
