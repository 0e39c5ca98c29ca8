/*
 * audit_api.c - GET /v1/admin/audit?limit=&cursor=&tenant= (scope admin): the audit trail newest
 * first, every tenant's rows or one tenant's with ?tenant=.
 */
#include <stdio.h>
#include <string.h>

#include "gateway/gateway.h"
#include "identity/identity.h"

#define AUDIT_PAGE_DEFAULT 100
#define AUDIT_PAGE_MAX	   1000

static void on_audit(struct http_req *req, struct store_op *op)
{
	if (gw_page_failed(req, op, "audit trail"))
		return;
	http_respond_json(req, 200,
			  json_pack("{s:O, s:s?}", "items", op->rows, "next_cursor",
				    op->next_cursor[0] ? op->next_cursor : NULL));
}

static void list_audit(struct http_req *req, void *arg)
{
	(void)arg;
	int64_t limit;
	if (!gw_limit(req, AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX, &limit))
		return;
	struct str tenant = STR_NULL;
	bool has_tenant = http_req_query(req, "tenant", &tenant);
	if (has_tenant && !identity_tenant_valid(tenant.p)) {
		http_respond_error(req, 400, "invalid_tenant",
				   "tenant must be a tenant id (1 to 64 of A-Z a-z 0-9 . _ -)");
		return;
	}
	struct store_op *op = store_op_new(STORE_OP_AUDIT_LIST, has_tenant ? tenant.p : req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	if (!gw_cursor(req, op)) {
		store_op_free(op);
		return;
	}
	op->all_tenants = !has_tenant;
	op->limit = limit;
	gw_store(req, op, on_audit);
}

enum soma_err gateway_audit_routes(struct http_router *r)
{
	return http_route_add(r, "GET", "/v1/admin/audit", list_audit, NULL, HTTP_ROUTE_ADMIN);
}
