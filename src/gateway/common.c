/*
 * common.c - helpers shared by the routers (see gateway.h): JSON bodies, store errors, ids,
 * limits. Running a store op for a request is in store_bridge.c.
 */
#include <stdlib.h>
#include <string.h>

#include "core/json_read.h"
#include "core/json_scan.h"
#include "core/log.h"
#include "core/utf8.h"
#include "gateway/gateway.h"
#include "queue/celery_wire.h"

static int depth_of(const json_t *v)
{
	int max = 0;
	if (json_is_object(v)) {
		const char *k;
		json_t *child;
		json_object_foreach((json_t *)v, k, child)
		{
			int d = depth_of(child);
			max = d > max ? d : max;
		}
		return max + 1;
	}
	if (json_is_array(v)) {
		size_t i;
		json_t *child;
		json_array_foreach(v, i, child)
		{
			int d = depth_of(child);
			max = d > max ? d : max;
		}
		return max + 1;
	}
	return 0;
}

/* Rejects nesting deeper than the limit before parsing, so a hostile body cannot recurse the
 * parser deeply (jansson parses recursively). Brackets inside strings are skipped. */
bool gw_json_nesting_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *e = p + n;
	int depth = 0;
	while (p < e) {
		unsigned char c = *p++;
		if (c == '"') { /* a string: its plain bytes eight at a time, escapes two at a time */
			while (p < e) {
				p = jscan_plain(p, e);
				if (p == e || *p == '"')
					break;
				p += *p == '\\' && p + 1 < e ? 2 : 1;
			}
			p += p < e;
		} else if (c == '{' || c == '[') {
			if (++depth > GW_JSON_MAX_DEPTH)
				return false;
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return true;
}

json_t *gw_json_object(struct http_req *req)
{
	if (!req->body || req->body_len == 0) {
		http_respond_error(req, 400, "invalid_json", "the request needs a JSON object body");
		return NULL;
	}
	if (!gw_json_nesting_ok(req->body, req->body_len)) {
		http_respond_error(req, 400, "invalid_json", "the JSON body is nested deeper than %d levels",
				   GW_JSON_MAX_DEPTH);
		return NULL;
	}
	json_error_t jerr;
	json_t *v = json_read(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!v && json_read_out_of_memory(&jerr)) {
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "out_of_memory",
				   "the server ran out of memory reading the body; retry later");
		return NULL;
	}
	if (!v && jerr.line < 1) { /* (a large body: json_read's words, no position) */
		http_respond_error(req, 400, "invalid_json", "the body is not valid JSON (%s)", jerr.text);
		return NULL;
	}
	if (!v) {
		http_respond_error(req, 400, "invalid_json", "the body is not valid JSON (line %d, column %d: %s)",
				   jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(v) || depth_of(v) > GW_JSON_MAX_DEPTH) {
		json_decref(v);
		http_respond_error(req, 400, "invalid_json", "the body must be a JSON object");
		return NULL;
	}
	return v;
}

void gw_store_error(struct http_req *req, const struct store_op *op, const char *what)
{
	switch (op->err) {
	case SOMA_ERR_NOT_FOUND:
		http_respond_error(req, 404, "not_found", "%s", op->error_text[0] ? op->error_text : "not found");
		(void)what;
		return;
	case SOMA_ERR_GONE:
		gw_store_gone(req);
		return;
	case SOMA_ERR_UNAVAILABLE:
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "store_busy", "the store is busy; retry in a second");
		return;
	case SOMA_ERR_CONFLICT:
		http_respond_error(req, 409, "conflict", "the %s already exists", what);
		return;
	case SOMA_ERR_INVALID:
		http_respond_error(req, 400, "invalid_request", "%s",
				   op->error_text[0] ? op->error_text : "invalid request");
		return;
	case SOMA_ERR_FULL: /* (the store's log says so, once in a while: not once per request) */
		http_resp_header(req, "Retry-After", GW_FULL_RETRY_AFTER);
		http_respond_error(req, 507, "storage_full", "%s", GW_FULL_TEXT);
		return;
	default:
		log_error("gateway", "store failure on %s: %s", what, soma_err_str(op->err));
		http_respond_error(req, 500, "store_error", "the store failed; the request was not applied; retry");
	}
}

void gw_store_gone(struct http_req *req)
{
	http_respond_error(req, 503, "data_dir_removed",
			   "the database under data.dir was removed or replaced while the server ran, so writes are "
			   "refused (they would be lost); restore data.dir and restart the server");
}

bool gw_valid_task_id(const char *s)
{
	char copy[CELERY_ID_BYTES + 1];
	if (!s || !celery_id_ok(s))
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	snprintf(copy, sizeof(copy), "%s", s);
	return !utf8_repair(copy); /* valid UTF-8: it can be a JSON string */
}

bool gw_valid_id(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_'))
			return false;
	}
	return true;
}

bool gw_limit(struct http_req *req, int64_t def, int64_t max, int64_t *out)
{
	struct str v;
	*out = def;
	if (!http_req_query(req, "limit", &v))
		return true;
	char *end;
	long long n = strtoll(v.p, &end, 10);
	if (v.len == 0 || *end || n < 1 || n > max) {
		http_respond_error(req, 400, "invalid_limit", "limit must be an integer from 1 to %lld",
				   (long long)max);
		return false;
	}
	*out = n;
	return true;
}

bool gw_cursor(struct http_req *req, struct store_op *op)
{
	struct str cursor;
	if (!http_req_query(req, "cursor", &cursor))
		return true;
	if (cursor.len == 0 || cursor.len >= sizeof(op->cursor)) {
		http_respond_error(req, 400, "invalid_cursor",
				   "cursor is not one this server gave out; start without it");
		return false;
	}
	snprintf(op->cursor, sizeof(op->cursor), "%.*s", (int)cursor.len, cursor.p);
	return true;
}

bool gw_page_failed(struct http_req *req, const struct store_op *op, const char *what)
{
	if (op->err == SOMA_ERR_INVALID)
		http_respond_error(req, 400, "invalid_cursor",
				   "cursor is not one this server gave out; start without it");
	else if (op->err != SOMA_OK)
		gw_store_error(req, op, what);
	return op->err != SOMA_OK;
}

enum soma_err gw_routes_add(struct http_router *r, const struct gw_route *routes, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		enum soma_err err =
			http_route_add(r, routes[i].method, routes[i].pattern, routes[i].fn, NULL, routes[i].flags);
		if (err != SOMA_OK)
			return err;
	}
	return SOMA_OK;
}
