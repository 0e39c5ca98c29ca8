/*
 * fetch.c - the fetch_page tool {url, max_chars?}: GET a page through the SSRF guard and return
 * its text {url, status, content_type, text, truncated}.
 *
 * DESIGN: one libcurl easy handle per run (no connection outlives it), driven synchronously on
 * the worker thread. The guard has three parts:
 *   - each URL (the first and every redirect target) must be http or https, and its host must be
 *     named by tools.fetch.allowed_hosts when that list is not empty;
 *   - libcurl resolves the name, and every socket it opens goes through open_socket(), which
 *     refuses any address that is not public unicast (ssrf_addr_refused): what is checked is what
 *     is connected to (no DNS rebinding window). The one exception is a URL whose host is an IP
 *     address the list names (http://127.0.0.1:8081/ with 127.0.0.1 listed): the operator chose
 *     that address. A name, even a listed one, never reaches a refused address;
 *   - redirects are not followed by libcurl: each Location is taken back through both checks,
 *     at most tools.fetch.max_redirects times.
 * Proxies from the environment are disabled (a proxy would hide the real destination). The body
 * is read up to tools.fetch.max_bytes (after decompression); more fails the run rather than
 * returning a part. The whole run, redirects included, is bounded by tools.fetch.timeout_s, and
 * stopped by tool_ctx.cancel: the progress callback (about once a second when idle) aborts it.
 * text/html (and XHTML) becomes text (html_text.c; libxml2 decodes from the HTTP charset); other
 * text types are returned as they are, converted from their HTTP charset with iconv (an unknown
 * one is taken as UTF-8), then repaired to valid UTF-8; anything else is refused: the tool
 * returns text.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/utf8.h"
#include "llm/curl_dl.h"
#include "tools/tools_int.h"

#define MAX_CHARS_DEFAULT 20000

struct fetch {
	const struct curl_api *api; /* libcurl */
	const char *allow;	    /* tools.fetch.allowed_hosts (config storage) */
	char exempt[64];	    /* the URL's host when it is an IP address the list names, else "" */
	char refused[200];	    /* why open_socket refused the last address, "" if it did not */
	char *body;		    /* what was read (owned), NUL-terminated when len > 0 */
	size_t len, cap, max;	    /* bytes read, allocated, allowed */
	bool too_big;		    /* the body passed max */
	bool deep;		    /* the page's HTML nested deeper than html_to_text reads: text left out */
	const _Atomic bool *cancel; /* tool_ctx.cancel (NULL: never) */
	bool stopped;		    /* the progress callback saw it true and aborted the transfer */
};

/* libcurl's progress callback: nonzero aborts the transfer (CURLE_ABORTED_BY_CALLBACK). */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct fetch *f = arg;
	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	if (f->cancel && *f->cancel)
		f->stopped = true;
	return f->stopped;
}

static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct fetch *f = arg;
	(void)purpose;
	const char *why = ssrf_addr_refused(&a->addr);
	if (why && !ssrf_addr_listed(f->exempt, &a->addr)) {
		char ip[INET6_ADDRSTRLEN] = "?";
		const void *bytes = a->family == AF_INET6
					    ? (const void *)&((struct sockaddr_in6 *)(void *)&a->addr)->sin6_addr
					    : (const void *)&((struct sockaddr_in *)(void *)&a->addr)->sin_addr;
		inet_ntop(a->family, bytes, ip, sizeof(ip));
		snprintf(f->refused, sizeof(f->refused), "%s is a %s address", ip, why);
		return CURL_SOCKET_BAD;
	}
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct fetch *f = arg;
	size_t add = size * n;
	if (add > f->max - f->len) {
		f->too_big = true;
		return 0; /* aborts the transfer */
	}
	if (f->len + add + 1 > f->cap) {
		size_t cap = f->cap ? f->cap : 16384;
		while (cap < f->len + add + 1)
			cap *= 2;
		if (cap > f->max + 1)
			cap = f->max + 1;
		char *b = realloc(f->body, cap);
		if (!b)
			return 0;
		f->body = b;
		f->cap = cap;
	}
	memcpy(f->body + f->len, p, add);
	f->len += add;
	f->body[f->len] = '\0';
	return add;
}

/* Whether host is an IP address (IPv6 in brackets, as in a URL). */
static bool ip_literal(const char *host)
{
	unsigned char b[16];
	char h[64];
	size_t n = strlen(host);
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(h)) {
		snprintf(h, sizeof(h), "%.*s", (int)(n - 2), host + 1);
		return inet_pton(AF_INET6, h, b) == 1;
	}
	return inet_pton(AF_INET, host, b) == 1;
}

/* The URL's scheme and host are allowed (SOMA_OK); else SOMA_ERR_INVALID (not a URL) or
 * SOMA_ERR_FORBIDDEN, with the reason in err. */
static enum soma_err url_allowed(struct fetch *f, const char *url, char *err, size_t cap)
{
	CURLU *u = f->api->url();
	char *scheme = NULL, *host = NULL;
	enum soma_err ok = SOMA_ERR_FORBIDDEN;
	if (!u || f->api->url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    f->api->url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
		ok = SOMA_ERR_INVALID, snprintf(err, cap,
						"%.300s is not a URL fetch_page can read: give an absolute "
						"http:// or https:// URL",
						url);
	else if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)
		snprintf(err, cap, "%.300s: only http and https URLs are fetched, not %s", url, scheme);
	else if (f->api->url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		ok = SOMA_ERR_INVALID, snprintf(err, cap, "%.300s names no host", url);
	else if (f->allow[0] && !ssrf_host_listed(f->allow, host))
		snprintf(err, cap, "%.300s: the host %s is not in tools.fetch.allowed_hosts", url, host);
	else
		ok = SOMA_OK;
	f->exempt[0] = '\0';
	if (ok == SOMA_OK && f->allow[0] && ip_literal(host) && strlen(host) < sizeof(f->exempt))
		snprintf(f->exempt, sizeof(f->exempt), "%s", host); /* listed, as checked above */
	if (scheme)
		f->api->str_free(scheme);
	if (host)
		f->api->str_free(host);
	if (u)
		f->api->url_cleanup(u);
	return ok;
}

bool fetch_url_host(const char *url, char *host, size_t cap)
{
	const struct curl_api *api = url ? curl_api_get(NULL) : NULL;
	CURLU *u = api ? api->url() : NULL;
	char *h = NULL;
	bool ok = u && api->url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
		  api->url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h && strlen(h) < cap;
	if (ok) {
		for (size_t i = 0; (host[i] = h[i]); i++)
			host[i] = (h[i] >= 'A' && h[i] <= 'Z') ? (char)(h[i] + 32) : h[i];
	}
	if (h)
		api->str_free(h);
	if (u)
		api->url_cleanup(u);
	return ok;
}

/* One GET of url; *status the HTTP status, *next the redirect target (malloc'd) or NULL. */
static enum soma_err get_once(struct fetch *f, CURL *h, const char *url, int64_t deadline, long *status, char **next,
			      char *err, size_t cap)
{
	const struct curl_api *api = f->api;
	int64_t left = deadline - (int64_t)(clock_mono_ns() / 1000000);
	if (left <= 0) {
		snprintf(err, cap, "%.300s: no time left (tools.fetch.timeout_s is %llds)", url,
			 cfg_int(CFG_TOOLS_FETCH_TIMEOUT_S));
		return SOMA_ERR_UNAVAILABLE;
	}
	api->easy_reset(h);
	free(f->body);
	f->body = NULL;
	f->len = f->cap = 0;
	f->refused[0] = '\0';
	api->easy_setopt(h, CURLOPT_URL, url);
	api->easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	api->easy_setopt(h, CURLOPT_OPENSOCKETDATA, f);
	api->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	api->easy_setopt(h, CURLOPT_WRITEDATA, f);
	api->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	api->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	api->easy_setopt(h, CURLOPT_PROXY, "");
	api->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	api->easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left);
	api->easy_setopt(h, CURLOPT_USERAGENT, "SomaAgent01-fetch_page/" SOMA_VERSION);
	api->easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	api->easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->max);
	api->easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	api->easy_setopt(h, CURLOPT_XFERINFODATA, f);
	api->easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	CURLcode rc = f->cancel && *f->cancel ? (f->stopped = true, CURLE_ABORTED_BY_CALLBACK) : api->easy_perform(h);
	*next = NULL;
	if (rc != CURLE_OK) {
		if (f->stopped)
			snprintf(err, cap, "stopped: %.300s was not fetched (the reply was stopped)", url);
		else if (f->refused[0])
			snprintf(
				err, cap,
				"%.300s refused by the SSRF guard: %s (only public addresses are fetched; a private or "
				"loopback address only when the URL names an IP address listed in "
				"tools.fetch.allowed_hosts, never through a host name)",
				url, f->refused);
		else if (f->too_big || rc == CURLE_FILESIZE_EXCEEDED)
			snprintf(err, cap, "%.300s is larger than tools.fetch.max_bytes (%zu bytes)", url, f->max);
		else
			snprintf(err, cap, "%.300s could not be fetched: %s", url, api->easy_strerror(rc));
		return f->refused[0]				     ? SOMA_ERR_FORBIDDEN
		       : f->too_big || rc == CURLE_FILESIZE_EXCEEDED ? SOMA_ERR_LIMIT
								     : SOMA_ERR_UNAVAILABLE;
	}
	api->easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	char *loc = NULL;
	if (*status >= 300 && *status < 400 && api->easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc &&
	    !(*next = strdup(loc))) {
		snprintf(err, cap, "the server ran out of memory; retry later");
		return SOMA_ERR_NOMEM;
	}
	return SOMA_OK;
}

/* The media type of a Content-Type ("text/html; charset=x" -> "text/html") into type, and its
 * charset into charset ("" when none). */
static void media_type(const char *ct, char *type, size_t tcap, char *charset, size_t ccap)
{
	ct = ct ? ct : "";
	size_t n = strcspn(ct, "; \t");
	snprintf(type, tcap, "%.*s", (int)n, ct);
	for (char *p = type; *p; p++)
		*p = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : *p;
	const char *cs = strcasestr(ct, "charset=");
	cs = cs ? cs + 8 + (cs[8] == '"') : "";
	snprintf(charset, ccap, "%.*s", (int)strcspn(cs, "; \t\""), cs);
}

/* body (len bytes, NUL-terminated) as UTF-8: converted from charset (glibc iconv) into a new
 * string, or body itself when there is nothing to convert (no charset, UTF-8 or ASCII, or one
 * iconv does not know: then it is taken as UTF-8 and repaired by the caller). NULL on OOM. */
static char *to_utf8(const char *body, size_t len, const char *charset)
{
	if (!charset[0] || strcasecmp(charset, "utf-8") == 0 || strcasecmp(charset, "utf8") == 0 ||
	    strcasecmp(charset, "us-ascii") == 0)
		return (char *)body;
	iconv_t cd = iconv_open("UTF-8", charset);
	if (cd == (iconv_t)-1)
		return (char *)body;
	size_t cap = len * 4 + 4, left = cap - 1; /* enough for any usual charset; more (E2BIG) is cut */
	char *out = malloc(cap), *in = (char *)body, *o = out;
	size_t inleft = len;
	while (out && inleft > 0 && iconv(cd, &in, &inleft, &o, &left) == (size_t)-1 && errno != E2BIG) {
		in++; /* (EILSEQ, EINVAL) a byte that is not of charset: U+FFFD instead */
		inleft--;
		if (left >= 3) {
			memcpy(o, "\xEF\xBF\xBD", 3);
			o += 3;
			left -= 3;
		}
	}
	iconv_close(cd);
	if (!out)
		return NULL;
	*o = '\0';
	return out;
}

/* The page's text (malloc'd) from the body, or NULL with err set. */
static char *page_text(struct fetch *f, const char *url, const char *type, const char *charset, char *err, size_t cap,
		       enum soma_err *e)
{
	char *text = NULL;
	if (strcmp(type, "text/html") == 0 || strcmp(type, "application/xhtml+xml") == 0) {
		text = html_to_text(f->body ? f->body : "", f->len, charset[0] ? charset : NULL, &f->deep);
	} else if (strncmp(type, "text/", 5) == 0) {
		text = f->body ? to_utf8(f->body, f->len, charset) : strdup("");
		if (text == f->body)
			f->body = NULL;
	} else {
		snprintf(err, cap, "%.300s is %s, not text: fetch_page returns web pages and other text only", url,
			 type[0] ? type : "of no declared type");
		*e = SOMA_ERR_INVALID;
		return NULL;
	}
	if (!text) {
		snprintf(err, cap, "the server ran out of memory; retry later");
		*e = SOMA_ERR_NOMEM;
		return NULL;
	}
	utf8_repair(text);
	return text;
}

/* Cuts text after max characters (code points); true when it cut. */
static bool cut(char *text, size_t max)
{
	size_t chars = 0;
	for (size_t i = 0; text[i]; i++) {
		if (((unsigned char)text[i] & 0xC0) != 0x80 && chars++ == max) {
			text[i] = '\0';
			return true;
		}
	}
	return false;
}

/* The text of a final answer (*text malloc'd) or the error that replaces it. */
static enum soma_err finish(struct fetch *f, CURL *h, const char *url, long status, char **text, char *err, size_t cap)
{
	if (status < 200 || status >= 300) {
		snprintf(err, cap, "%.300s answered HTTP %ld; nothing was read", url, status);
		return status == 404 || status == 410 ? SOMA_ERR_NOT_FOUND : SOMA_ERR_UNAVAILABLE;
	}
	char *ct = NULL, type[128], charset[64];
	f->api->easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
	media_type(ct, type, sizeof(type), charset, sizeof(charset));
	enum soma_err e = SOMA_OK;
	*text = page_text(f, url, type, charset, err, cap, &e);
	return e;
}

enum soma_err tool_fetch_page(const struct tool_ctx *ctx, json_t *args, char **result, char *err, size_t cap)
{
	const char *why = NULL;
	struct fetch f = {.api = curl_api_get(&why),
			  .allow = cfg_str(CFG_TOOLS_FETCH_ALLOWED_HOSTS),
			  .max = (size_t)cfg_int(CFG_TOOLS_FETCH_MAX_BYTES),
			  .cancel = ctx ? ctx->cancel : NULL};
	json_t *mc = json_object_get(args, "max_chars");
	size_t max_chars = mc ? (size_t)json_integer_value(mc) : MAX_CHARS_DEFAULT;
	if (!f.api) {
		snprintf(err, cap, "pages cannot be fetched here: %s", why);
		return SOMA_ERR_UNAVAILABLE;
	}
	CURL *h = f.api->easy_init();
	char *url = strdup(json_string_value(json_object_get(args, "url")));
	if (!h || !url) {
		free(url);
		if (h)
			f.api->easy_cleanup(h);
		snprintf(err, cap, "the server ran out of memory; retry later");
		return SOMA_ERR_NOMEM;
	}
	int64_t deadline = (int64_t)(clock_mono_ns() / 1000000) + cfg_int(CFG_TOOLS_FETCH_TIMEOUT_S) * 1000;
	long status = 0, hops = 0, max_hops = (long)cfg_int(CFG_TOOLS_FETCH_MAX_REDIRECTS);
	enum soma_err e;
	char *next = NULL, *text = NULL;
	while ((e = url_allowed(&f, url, err, cap)) == SOMA_OK &&
	       (e = get_once(&f, h, url, deadline, &status, &next, err, cap)) == SOMA_OK && next) {
		if (hops++ >= max_hops) {
			snprintf(err, cap, "%.300s redirected more than tools.fetch.max_redirects (%ld) times", url,
				 max_hops);
			e = SOMA_ERR_LIMIT;
			break;
		}
		free(url);
		url = next;
		next = NULL;
	}
	if (e == SOMA_OK && !next)
		e = finish(&f, h, url, status, &text, err, cap);
	if (e == SOMA_OK) {
		bool truncated = cut(text, max_chars) || f.deep;
		char type[128], charset[64], *ct = NULL;
		f.api->easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
		media_type(ct, type, sizeof(type), charset, sizeof(charset));
		json_t *out = json_pack("{s:s, s:i, s:s, s:s, s:b}", "url", url, "status", (int)status, "content_type",
					type, "text", text, "truncated", truncated);
		*result = out ? json_dumps(out, JSON_COMPACT) : NULL;
		json_decref(out);
		if (!*result) {
			snprintf(err, cap, "the server ran out of memory; retry later");
			e = SOMA_ERR_NOMEM;
		}
	}
	free(text);
	free(next);
	free(url);
	free(f.body);
	f.api->easy_cleanup(h);
	return e;
}
