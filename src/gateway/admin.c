/*
 * admin.c - the admin API of identities (scope admin): API keys and tenants.
 *   POST   /v1/keys {tenant, scopes?, name?}  -> 201 {id, tenant, name, scopes, created_at, status, token}
 *   GET    /v1/keys?tenant=&limit=&cursor=    -> {keys:[...], next_cursor}   (never a token or hash)
 *   DELETE /v1/keys/{id}                      -> the revoked key
 *   GET    /v1/tenants?limit=&cursor=         -> {tenants:[{id, name, created_at, active_keys}], next_cursor}
 *   POST   /v1/tenants {id, name?}            -> 201 the tenant; 409 when it exists
 *
 * DESIGN: each route runs one store op on the store's threads (gw_store) and answers on the io
 * thread; nothing here touches the disk. A new key's token is made here (identity_key_new) and
 * rides in the op's row only so that the 201 can show it once: the store keeps its SHA-256, and
 * the token reaches no log, audit row or error. After a key's commit the auth cache is patched
 * at once (auth_cache_put): a new key works and a revoked one stops on the next request, not
 * after the next refresh. Every change is audited with the caller's identity. Admin scope is
 * operator scope: an admin manages every tenant's keys.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "core/log.h"
#include "gateway/gateway.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX     1000

static void oom(struct http_req *req)
{
	http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
}

/* One audit row of a change made by req's caller. The row is the changed tenant's (a key's
 * tenant, a new tenant), as the CLI writes it, so ?tenant= finds it; who made it is the caller's
 * subject and key. */
static void audit_change(struct http_req *req, const char *tenant, const char *action, const char *kind, const char *id,
			 const char *detail)
{
	char resource[STORE_TASK_ID_MAX + 32];
	snprintf(resource, sizeof(resource), "%s:%s", kind, id);
	struct audit_entry e = {.tenant = tenant && tenant[0] ? tenant : req->ident.tenant,
				.subject = req->ident.subject,
				.key_id = req->ident.key_id[0] ? req->ident.key_id : NULL,
				.action = action,
				.resource = resource,
				.decision = "done",
				.request_id = req->request_id,
				.detail = detail};
	audit_record(&e);
}

/* The key row the store left in op->row -> *k (for the auth cache). */
static bool key_from_row(const json_t *row, struct store_key *k)
{
	const char *hex = json_string_value(json_object_get(row, "token_hash"));
	memset(k, 0, sizeof(*k));
	if (!hex || strlen(hex) != 64)
		return false;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return false;
		k->token_hash[i] = (unsigned char)v;
	}
	snprintf(k->id, sizeof(k->id), "%s", json_string_value(json_object_get(row, "id")));
	snprintf(k->tenant, sizeof(k->tenant), "%s", json_string_value(json_object_get(row, "tenant")));
	snprintf(k->name, sizeof(k->name), "%s", json_string_value(json_object_get(row, "name")));
	snprintf(k->scopes, sizeof(k->scopes), "%s", json_string_value(json_object_get(row, "scopes")));
	k->created_ms = json_integer_value(json_object_get(row, "created_ms"));
	k->revoked_ms = json_integer_value(json_object_get(row, "revoked_ms"));
	return true;
}

static void cache_put(const json_t *row)
{
	struct store_key k;
	if (!key_from_row(row, &k) || auth_cache_put(&k) != SOMA_OK)
		log_warn("auth", "the key change is stored but takes effect only at the next key refresh "
				 "(auth.key_refresh_ms)");
}

/* ---- keys ---------------------------------------------------------------------------------- */

static void key_created(struct http_req *req, struct store_op *op)
{
	json_t *token = json_object_get(op->row, "token");
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "key");
	} else {
		cache_put(op->row);
		struct store_key k;
		(void)key_from_row(op->row, &k);
		audit_change(req, k.tenant, "key.create", "key", k.id, k.scopes[0] ? k.scopes : NULL);
		json_t *body = store_key_row_json(k.id, k.tenant, k.name, k.scopes, k.created_ms, 0);
		if (body && json_object_set_new(body, "token", json_string(json_string_value(token))) == 0)
			http_respond_json(req, 201, body);
		else
			oom(req);
	}
	if (json_is_string(token)) /* the token's only other copy is in the response being sent */
		OPENSSL_cleanse((char *)json_string_value(token), json_string_length(token));
}

/* scopes: an array of names, or one string "a b" / "a,b"; normalised into out[cap]. */
static bool body_scopes(const json_t *v, char *out, size_t cap)
{
	char joined[STORE_SCOPES_MAX * 2 + 2] = "";
	if (json_is_array(v)) {
		size_t i, pos = 0;
		json_t *s;
		json_array_foreach(v, i, s)
		{
			size_t n = json_string_length(s);
			if (!json_is_string(s) || pos + n + 2 > sizeof(joined))
				return false;
			memcpy(joined + pos, json_string_value(s), n);
			pos += n;
			joined[pos++] = ' ';
			joined[pos] = '\0';
		}
	} else if (json_is_string(v)) {
		if (json_string_length(v) >= sizeof(joined))
			return false;
		snprintf(joined, sizeof(joined), "%s", json_string_value(v));
	} else if (v && !json_is_null(v)) {
		return false;
	}
	return strlen(joined) == strcspn(joined, "\t\r\n") && identity_scopes_normalize(joined, out, cap);
}

static void create_key(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	const char *tenant = json_string_value(json_object_get(body, "tenant"));
	const json_t *name = json_object_get(body, "name");
	char scopes[STORE_SCOPES_MAX + 1], token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	if (!tenant || !identity_tenant_valid(tenant)) {
		http_respond_error(req, 422, "invalid_tenant",
				   "tenant must be a tenant id: 1 to 64 characters of "
				   "A-Z a-z 0-9 . _ -");
	} else if (!body_scopes(json_object_get(body, "scopes"), scopes, sizeof(scopes))) {
		http_respond_error(req, 422, "invalid_scopes",
				   "scopes must be a list of names of a-z 0-9 : _ . - "
				   "(at most %d characters in all), e.g. [\"admin\"]",
				   STORE_SCOPES_MAX);
	} else if (name && !json_is_null(name) && (!json_is_string(name) || json_string_length(name) > STORE_ID_MAX)) {
		http_respond_error(req, 422, "invalid_name", "name must be a string of at most %d characters",
				   STORE_ID_MAX);
	} else if (identity_key_new(tenant, scopes, json_string_value(name), token, &k) != SOMA_OK) {
		http_respond_error(req, 500, "entropy_unavailable", "cannot draw random bytes for the key; retry");
	} else {
		struct store_op *op = store_op_new(STORE_OP_KEY_INSERT, k.tenant);
		char hex[65];
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", k.token_hash[i]);
		if (op)
			op->row = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "id", k.id, "tenant", k.tenant,
					    "name", k.name, "scopes", k.scopes, "token_hash", hex, "created_ms",
					    (json_int_t)k.created_ms, "token", token);
		OPENSSL_cleanse(token, sizeof(token));
		if (op && op->row)
			gw_store(req, op, key_created);
		else {
			store_op_free(op);
			oom(req);
		}
	}
	json_decref(body);
}

static void respond_page(struct http_req *req, struct store_op *op, const char *what, const char *list)
{
	if (gw_page_failed(req, op, what))
		return;
	http_respond_json(
		req, 200,
		json_pack("{s:O, s:s?}", list, op->rows, "next_cursor", op->next_cursor[0] ? op->next_cursor : NULL));
}

static void keys_listed(struct http_req *req, struct store_op *op)
{
	respond_page(req, op, "keys", "keys");
}

/* Starts a list op of kind with ?limit= and ?cursor=; NULL after answering. */
static struct store_op *list_op(struct http_req *req, enum store_op_kind kind, const char *tenant)
{
	int64_t limit;
	if (!gw_limit(req, PAGE_DEFAULT, PAGE_MAX, &limit))
		return NULL;
	struct store_op *op = store_op_new(kind, tenant);
	if (!op) {
		oom(req);
		return NULL;
	}
	op->limit = limit;
	if (!gw_cursor(req, op)) {
		store_op_free(op);
		return NULL;
	}
	return op;
}

static void list_keys(struct http_req *req, void *arg)
{
	(void)arg;
	struct str tenant = STR_NULL;
	bool one = http_req_query(req, "tenant", &tenant);
	if (one && (strlen(tenant.p) != tenant.len || !identity_tenant_valid(tenant.p))) {
		http_respond_error(req, 400, "invalid_tenant",
				   "tenant must be a tenant id: 1 to 64 characters of "
				   "A-Z a-z 0-9 . _ -");
		return;
	}
	struct store_op *op = list_op(req, STORE_OP_KEYS_LIST, one ? tenant.p : "");
	if (!op)
		return;
	op->all_tenants = !one;
	gw_store(req, op, keys_listed);
}

static void key_revoked(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "key");
		return;
	}
	cache_put(op->row);
	struct store_key k;
	(void)key_from_row(op->row, &k);
	audit_change(req, k.tenant, "key.revoke", "key", k.id, NULL);
	json_t *body = store_key_row_json(k.id, k.tenant, k.name, k.scopes, k.created_ms, k.revoked_ms);
	if (body)
		http_respond_json(req, 200, body);
	else
		oom(req);
}

static void revoke_key(struct http_req *req, void *arg)
{
	(void)arg;
	struct str id = http_req_param(req, "id");
	if (id.len != IDENTITY_KEY_ID_LEN || strspn(id.p, "0123456789abcdef") != IDENTITY_KEY_ID_LEN) {
		http_respond_error(req, 404, "not_found",
				   "no API key has this id (ids are 16 hex digits; see GET /v1/keys)");
		return;
	}
	struct store_op *op = store_op_new(STORE_OP_KEY_REVOKE, "");
	if (!op) {
		oom(req);
		return;
	}
	snprintf(op->task_id, sizeof(op->task_id), "%.*s", (int)id.len, id.p);
	gw_store(req, op, key_revoked);
}

/* ---- tenants ------------------------------------------------------------------------------- */

static void tenants_listed(struct http_req *req, struct store_op *op)
{
	respond_page(req, op, "tenants", "tenants");
}

static void list_tenants(struct http_req *req, void *arg)
{
	(void)arg;
	struct store_op *op = list_op(req, STORE_OP_TENANTS_LIST, "");
	if (op)
		gw_store(req, op, tenants_listed);
}

static void tenant_created(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "tenant");
		return;
	}
	audit_change(req, op->task_id, "tenant.create", "tenant", op->task_id, NULL);
	http_respond_json(req, 201, json_incref(op->row));
}

static void create_tenant(struct http_req *req, void *arg)
{
	(void)arg;
	json_t *body = gw_json_object(req);
	if (!body)
		return;
	const char *id = json_string_value(json_object_get(body, "id"));
	const json_t *name = json_object_get(body, "name");
	if (!id || !identity_tenant_valid(id)) {
		http_respond_error(req, 422, "invalid_id",
				   "id must be a tenant id: 1 to 64 characters of A-Z a-z 0-9 . _ -");
	} else if (name && !json_is_null(name) && (!json_is_string(name) || json_string_length(name) > 200)) {
		http_respond_error(req, 422, "invalid_name", "name must be a string of at most 200 characters");
	} else {
		struct store_op *op = store_op_new(STORE_OP_TENANT_CREATE, id);
		if (op) {
			snprintf(op->task_id, sizeof(op->task_id), "%s", id);
			op->row = json_pack("{s:s}", "name", json_is_string(name) ? json_string_value(name) : "");
		}
		if (op && op->row) {
			gw_store(req, op, tenant_created);
		} else {
			store_op_free(op);
			oom(req);
		}
	}
	json_decref(body);
}

enum soma_err gateway_admin_routes(struct http_router *r)
{
	enum soma_err err = http_route_add(r, "POST", "/v1/keys", create_key, NULL, HTTP_ROUTE_ADMIN);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/keys", list_keys, NULL, HTTP_ROUTE_ADMIN);
	if (err == SOMA_OK)
		err = http_route_add(r, "DELETE", "/v1/keys/{id}", revoke_key, NULL, HTTP_ROUTE_ADMIN);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/tenants", list_tenants, NULL, HTTP_ROUTE_ADMIN);
	if (err == SOMA_OK)
		err = http_route_add(r, "POST", "/v1/tenants", create_tenant, NULL, HTTP_ROUTE_ADMIN);
	return err;
}
