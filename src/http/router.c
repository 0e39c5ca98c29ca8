/*
 * router.c - method + path routing with {param} segments (see http.h).
 *
 * DESIGN: routes are kept in registration order and matched segment by segment; a literal
 * segment beats a parameter at the same position, so /v1/sessions/export wins over
 * /v1/sessions/{id} whatever the registration order (the original system's catch-all routes
 * shadowed later ones; here the most specific match wins). When the path matches but the method
 * does not, the caller gets 405 with the Allow list. HEAD is served by GET routes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/router_int.h"

#define MAX_SEGMENTS 16
#define MAX_ROUTES   256

struct http_route {
	char method[16];	       /* "GET" etc. */
	char *pattern;		       /* owned copy, e.g. "/v1/sessions/{id}" */
	struct str segs[MAX_SEGMENTS]; /* segments of pattern (into pattern) */
	bool is_param[MAX_SEGMENTS];   /* segment is {name} (segs holds name) */
	size_t nsegs;		       /* used entries */
	size_t nparams;		       /* parameter segments */
	http_handler_fn handler;       /* called for matching requests */
	void *arg;		       /* passed to handler */
	unsigned flags;		       /* enum http_route_flags */
	size_t file_body_max;	       /* > 0: the body streams to a temp file, up to this size */
	size_t mem_body_max;	       /* > 0: the body in memory may be this large (not http.max_body) */
	const char *mem_body_key;      /* the setting of mem_body_max, for the 413's words (static) */
	http_error_fn error_fn;	       /* renders its errors, or NULL (http_route_set_error_fn) */
};

struct http_router {
	struct http_route *routes[MAX_ROUTES]; /* owned */
	uint32_t shape[MAX_ROUTES];	       /* shape_of(routes[i]): compared before a route is read */
	size_t n;			       /* used entries */
};

struct http_router *http_router_new(void)
{
	return calloc(1, sizeof(struct http_router));
}

void http_router_free(struct http_router *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->routes[i]->pattern);
		free(r->routes[i]);
	}
	free(r);
}

/* Splits a path into segments; false when there are too many. "/" has zero segments. */
static bool split(struct str path, struct str *segs, size_t *n)
{
	*n = 0;
	size_t i = 0;
	while (i < path.len) {
		if (path.p[i] == '/') {
			i++;
			continue;
		}
		size_t start = i;
		while (i < path.len && path.p[i] != '/')
			i++;
		if (*n == MAX_SEGMENTS)
			return false;
		segs[(*n)++] = (struct str){path.p + start, i - start};
	}
	return true;
}

/* A route's or a path's shape: its segment count and a hash of its key segment (the second, or
 * the only one), WILD when the route has a parameter there. A path can only match routes of its
 * own shape or of its count with WILD, so the match loop skips the others on one compare of a
 * packed array instead of reading each route. */
#define SHAPE_WILD 0xffffffu
static uint32_t shape_of(const struct str *segs, size_t nsegs, bool param)
{
	uint32_t h = 0;
	if (param) {
		h = SHAPE_WILD;
	} else if (nsegs) {
		struct str k = segs[nsegs > 1 ? 1 : 0];
		h = str_hash_bytes(2166136261u, k.p, k.len);
		h = (h ^ (h >> 24)) & 0xffffffu;
		h = h == SHAPE_WILD ? 0 : h;
	}
	return (uint32_t)(nsegs & 0xff) << 24 | h;
}

/* Two routes clash when method and every segment agree, parameters matching any name:
 * /v1/keys/{id} and /v1/keys/{name} could never both be reached. */
static bool same_shape(const struct http_route *a, const struct http_route *b)
{
	if (strcmp(a->method, b->method) != 0 || a->nsegs != b->nsegs)
		return false;
	for (size_t i = 0; i < a->nsegs; i++) {
		if (a->is_param[i] != b->is_param[i] || (!a->is_param[i] && !str_eq(a->segs[i], b->segs[i])))
			return false;
	}
	return true;
}

enum soma_err http_route_add(struct http_router *r, const char *method, const char *pattern, http_handler_fn handler,
			     void *arg, unsigned flags)
{
	if (r->n == MAX_ROUTES || pattern[0] != '/' || strlen(method) >= 16)
		return SOMA_ERR_INVALID;
	struct http_route *rt = calloc(1, sizeof(*rt));
	if (!rt || !(rt->pattern = strdup(pattern))) {
		free(rt);
		return SOMA_ERR_NOMEM;
	}
	snprintf(rt->method, sizeof(rt->method), "%s", method);
	rt->handler = handler;
	rt->arg = arg;
	rt->flags = flags;
	bool ok = split(str_from(rt->pattern), rt->segs, &rt->nsegs);
	for (size_t i = 0; ok && i < rt->nsegs; i++) {
		struct str s = rt->segs[i];
		if (s.p[0] == '{') {
			ok = s.len > 2 && s.p[s.len - 1] == '}' && !memchr(s.p + 1, '{', s.len - 2);
			rt->segs[i] = (struct str){s.p + 1, s.len - 2};
			rt->is_param[i] = true;
			rt->nparams++;
		} else {
			ok = !memchr(s.p, '{', s.len) && !memchr(s.p, '}', s.len);
		}
	}
	ok = ok && rt->nparams <= HTTP_MAX_PARAMS;
	for (size_t i = 0; ok && i < r->n; i++)
		ok = !same_shape(r->routes[i], rt);
	if (!ok) {
		free(rt->pattern);
		free(rt);
		return SOMA_ERR_INVALID;
	}
	r->shape[r->n] = shape_of(rt->segs, rt->nsegs, rt->nsegs && rt->is_param[rt->nsegs > 1 ? 1 : 0]);
	r->routes[r->n++] = rt;
	return SOMA_OK;
}

/* Score of a path match: -1 for no match, else higher for more literal segments (earlier
 * segments weigh more), so the most specific pattern wins. */
static long match_score(const struct http_route *rt, const struct str *segs, size_t nsegs)
{
	if (rt->nsegs != nsegs)
		return -1;
	long score = 0;
	for (size_t i = 0; i < nsegs; i++) {
		score <<= 1;
		if (rt->is_param[i])
			continue;
		if (!str_eq(rt->segs[i], segs[i]))
			return -1;
		score |= 1;
	}
	return score;
}

static bool method_ok(const struct http_route *rt, struct str method)
{
	return str_eq_cstr(method, rt->method) || (str_eq_cstr(method, "HEAD") && strcmp(rt->method, "GET") == 0);
}

enum http_match http_router_match(const struct http_router *r, struct http_req *req, char *allow, size_t allow_cap)
{
	struct str segs[MAX_SEGMENTS];
	size_t nsegs;
	req->route = NULL;
	if (!split(req->path, segs, &nsegs))
		return HTTP_MATCH_NOT_FOUND;
	const struct http_route *best = NULL;
	long best_score = -1;
	bool path_seen = false;
	uint32_t literal = shape_of(segs, nsegs, false), wild = shape_of(segs, nsegs, true);
	for (size_t i = 0; i < r->n; i++) {
		if (r->shape[i] != literal && r->shape[i] != wild)
			continue;
		long score = match_score(r->routes[i], segs, nsegs);
		if (score < 0)
			continue;
		path_seen = true;
		if (method_ok(r->routes[i], req->method) && score > best_score) {
			best = r->routes[i];
			best_score = score;
		}
	}
	if (best) {
		size_t p = 0;
		for (size_t i = 0; i < nsegs; i++) {
			if (best->is_param[i])
				req->params[p++] = segs[i];
		}
		req->route = best;
		return HTTP_MATCH_OK;
	}
	if (!path_seen)
		return HTTP_MATCH_NOT_FOUND;
	/* the distinct methods of every route on this path; GET brings HEAD */
	const char *methods[MAX_ROUTES + 1];
	size_t nm = 0;
	for (size_t i = 0; i < r->n; i++) {
		const struct http_route *rt = r->routes[i];
		if (match_score(rt, segs, nsegs) < 0)
			continue;
		const char *add[2] = {rt->method, strcmp(rt->method, "GET") == 0 ? "HEAD" : NULL};
		for (size_t a = 0; a < 2 && add[a]; a++) {
			size_t j = 0;
			while (j < nm && strcmp(methods[j], add[a]) != 0)
				j++;
			if (j == nm && nm < MAX_ROUTES + 1)
				methods[nm++] = add[a];
		}
	}
	size_t used = 0;
	allow[0] = '\0';
	for (size_t j = 0; j < nm; j++) {
		int n = snprintf(allow + used, allow_cap - used, "%s%s", used ? ", " : "", methods[j]);
		if (n < 0 || (size_t)n >= allow_cap - used)
			break;
		used += (size_t)n;
	}
	return HTTP_MATCH_BAD_METHOD;
}

size_t http_route_file_body(const struct http_route *route)
{
	return route->file_body_max;
}

enum soma_err http_route_set_file_body(struct http_router *r, const char *method, const char *pattern, size_t max)
{
	for (size_t i = 0; i < r->n; i++) {
		if (strcmp(r->routes[i]->method, method) == 0 && strcmp(r->routes[i]->pattern, pattern) == 0) {
			r->routes[i]->file_body_max = max;
			return SOMA_OK;
		}
	}
	return SOMA_ERR_NOT_FOUND;
}

size_t http_route_mem_body(const struct http_route *route, const char **key)
{
	*key = route->mem_body_key;
	return route->mem_body_max;
}

enum soma_err http_route_set_mem_body(struct http_router *r, const char *method, const char *pattern, size_t max,
				      const char *key)
{
	for (size_t i = 0; i < r->n; i++) {
		if (strcmp(r->routes[i]->method, method) == 0 && strcmp(r->routes[i]->pattern, pattern) == 0) {
			r->routes[i]->mem_body_max = max;
			r->routes[i]->mem_body_key = key;
			return SOMA_OK;
		}
	}
	return SOMA_ERR_NOT_FOUND;
}

enum soma_err http_route_set_error_fn(struct http_router *r, const char *method, const char *pattern, http_error_fn fn)
{
	for (size_t i = 0; i < r->n; i++) {
		if (strcmp(r->routes[i]->method, method) == 0 && strcmp(r->routes[i]->pattern, pattern) == 0) {
			r->routes[i]->error_fn = fn;
			return SOMA_OK;
		}
	}
	return SOMA_ERR_NOT_FOUND;
}

http_error_fn http_route_error_fn(const struct http_route *route)
{
	return route->error_fn;
}

const char *http_route_pattern(const struct http_route *route)
{
	return route->pattern;
}
unsigned http_route_flags(const struct http_route *route)
{
	return route->flags;
}
void http_route_invoke(const struct http_route *route, struct http_req *req)
{
	route->handler(req, route->arg);
}

int http_route_param_index(const struct http_route *route, const char *name)
{
	int p = 0;
	for (size_t i = 0; i < route->nsegs; i++) {
		if (!route->is_param[i])
			continue;
		if (str_eq_cstr(route->segs[i], name))
			return p;
		p++;
	}
	return -1;
}
