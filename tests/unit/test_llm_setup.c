/*
 * test_llm_setup.c - what every provider call sends alike (llm_setup, src/llm/call.c): the
 * constant header lists (stream or not), the provider URL parsed as CURLOPT_URL would parse it,
 * a URL libcurl refuses left as text (CURLOPT_URL then reports it per call), and which setting
 * changes make a new setup (llm_setup_matches). Needs libcurl.so.4 (loaded as the server does).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "llm/llm_int.h"

static struct llm_config cfg_of(const char *base_url, const char *key)
{
	struct llm_config cfg = {.connect_timeout_s = 5, .timeout_s = 60, .max_retries = 2, .backoff_ms = 500};
	snprintf(cfg.base_url, sizeof(cfg.base_url), "%s", base_url);
	snprintf(cfg.api_key, sizeof(cfg.api_key), "%s", key);
	snprintf(cfg.model, sizeof(cfg.model), "%s", "m");
	return cfg;
}

/* A new setup for base_url and key (libcurl loaded first, as llm_call_begin does). */
static struct llm_setup *setup_of(const char *base_url, const char *key, struct llm_config *cfg)
{
	cr_assert_not_null(curl_api_get(NULL), "libcurl.so.4 must load for this test (scripts/deps.sh installs it)");
	*cfg = cfg_of(base_url, key);
	struct llm_setup *s = llm_setup_new(cfg);
	cr_assert_not_null(s);
	cr_assert_eq(s->refs, 1);
	return s;
}

/* The list holds exactly the lines of want (NULL-ended), in order. */
static void list_is(const struct curl_slist *l, const char *const *want, const char *what)
{
	size_t i = 0;
	for (; l; l = l->next, i++) {
		cr_assert_not_null(want[i], "%s: extra header %s", what, l->data);
		cr_assert_str_eq(l->data, want[i], "%s: header %zu", what, i);
	}
	cr_assert_null(want[i], "%s: header %s missing", what, want[i]);
}

Test(llm_setup, headers_and_parsed_url)
{
	struct llm_config cfg;
	struct llm_setup *s = setup_of("http://127.0.0.1:8080/v1", "sk-test", &cfg);
	const struct curl_api *curl = curl_api_get(NULL);
	const char *whole[] = {"Content-Type: application/json", "Authorization: Bearer sk-test", "Expect:", NULL};
	const char *stream[] = {"Content-Type: application/json", "Authorization: Bearer sk-test",
				"Expect:", "Accept: text/event-stream", NULL};
	list_is(s->headers[0], whole, "whole reply");
	list_is(s->headers[1], stream, "streamed reply");
	cr_assert_str_eq(s->url_text, "http://127.0.0.1:8080/v1/chat/completions");
	cr_assert_not_null(s->url, "a valid URL is parsed");
	char *url = NULL, *host = NULL, *path = NULL;
	cr_assert_eq(curl->url_get(s->url, CURLUPART_URL, &url, 0), CURLUE_OK);
	cr_assert_eq(curl->url_get(s->url, CURLUPART_HOST, &host, 0), CURLUE_OK);
	cr_assert_eq(curl->url_get(s->url, CURLUPART_PATH, &path, 0), CURLUE_OK);
	cr_assert_str_eq(url, "http://127.0.0.1:8080/v1/chat/completions");
	cr_assert_str_eq(host, "127.0.0.1");
	cr_assert_str_eq(path, "/v1/chat/completions");
	curl->str_free(url);
	curl->str_free(host);
	curl->str_free(path);
	llm_setup_unref(s);
}

Test(llm_setup, refused_url_stays_text)
{
	struct llm_config cfg;
	struct llm_setup *s = setup_of("http://[::1/v1", "k", &cfg);
	cr_assert_null(s->url, "libcurl refuses an unclosed IPv6 host; CURLOPT_URL reports it per call");
	cr_assert_str_eq(s->url_text, "http://[::1/v1/chat/completions");
	llm_setup_unref(s);
}

Test(llm_setup, matches_what_changes_requests)
{
	struct llm_config cfg;
	struct llm_setup *s = setup_of("https://api.example.com/v1", "k1", &cfg);
	struct llm_config other = cfg;
	cr_assert(llm_setup_matches(s, &other));
	snprintf(other.model, sizeof(other.model), "%s", "another"); /* in the body, not the setup */
	other.max_retries = 7;
	cr_assert(llm_setup_matches(s, &other));
	other = cfg;
	snprintf(other.api_key, sizeof(other.api_key), "%s", "k2");
	cr_assert_not(llm_setup_matches(s, &other), "a new key needs a new Authorization header");
	other = cfg;
	snprintf(other.base_url, sizeof(other.base_url), "%s", "https://api.example.com/v2");
	cr_assert_not(llm_setup_matches(s, &other), "a new base_url needs a new URL");
	other = cfg;
	other.timeout_s = 1;
	cr_assert_not(llm_setup_matches(s, &other), "timeouts are set with the setup");
	other = cfg;
	other.connect_timeout_s = 1;
	cr_assert_not(llm_setup_matches(s, &other));
	s->refs++; /* a second holder: the first unref must not free it */
	llm_setup_unref(s);
	cr_assert_eq(s->refs, 1);
	llm_setup_unref(s);
}

Test(llm_setup, direct_path_for_plain_http_at_a_literal_address)
{
	struct llm_config cfg;
	struct llm_setup *s = setup_of("http://127.0.0.1:8080/v1", "sk-test", &cfg);
	cr_assert(s->direct);
	cr_assert_str_eq(s->target.path, "/v1/chat/completions");
	cr_assert_str_eq(s->h1_head[0], "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
					"Content-Type: application/json\r\nAuthorization: Bearer sk-test\r\n"
					"Accept: */*\r\n");
	cr_assert_str_eq(s->h1_head[1], "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
					"Content-Type: application/json\r\nAuthorization: Bearer sk-test\r\n"
					"Accept: text/event-stream\r\n");
	cr_assert_eq(s->h1_head_len[1], strlen(s->h1_head[1]));
	llm_setup_unref(s);

	const char *libcurl_urls[] = {"https://127.0.0.1:8080/v1", "http://api.example.com/v1"};
	for (size_t i = 0; i < 2; i++) {
		s = setup_of(libcurl_urls[i], "k", &cfg);
		cr_assert_not(s->direct, "%s goes through libcurl", libcurl_urls[i]);
		cr_assert_null(s->h1_head[0]);
		llm_setup_unref(s);
	}
	s = setup_of("http://127.0.0.1:8080/v1", "line\r\nX-Injected: 1", &cfg);
	cr_assert_not(s->direct, "a key that would break the head is left to libcurl");
	llm_setup_unref(s);

	cfg = cfg_of("http://127.0.0.1:8080/v1", "k");
	cfg.env_proxy = true;
	s = llm_setup_new(&cfg);
	cr_assert_not(s->direct, "an HTTP proxy in the environment is libcurl's to honour");
	struct llm_config no_proxy = cfg;
	no_proxy.env_proxy = false;
	cr_assert_not(llm_setup_matches(s, &no_proxy));
	llm_setup_unref(s);
}
