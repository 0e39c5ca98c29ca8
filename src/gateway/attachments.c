/*
 * attachments.c - GET /v1/attachments/{id}: the bytes of one upload (the POST side is uploads.c).
 *
 * DESIGN: runs on the io thread. The store answers whether the attachment is the caller
 * tenant's (and its sha256, type and name); the blob is then opened at
 * data.dir/blobs/<2 hex>/<sha256> and sent with sendfile, its stored type, nosniff,
 * `Content-Security-Policy: default-src 'none'; sandbox` (on errors too) and a
 * Content-Disposition that is inline only for png, jpeg, gif and webp (inline_safe). A row whose
 * blob is not on this node (several nodes with their own data.dir) is a 500 that tells the
 * operator to share data.dir/blobs.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "gateway/gateway.h"
#include "gateway/uploads_int.h"

/* The types a browser only ever draws, never runs: these alone are served inline. Anything else
 * (image/svg+xml above all: it may hold <script>, which would run on the UI's origin, in the
 * anonymous loopback mode with the whole admin API) is served as a download. */
static bool inline_safe(const char *mime)
{
	static const char *const safe[] = {"image/png", "image/jpeg", "image/gif", "image/webp"};
	for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++) {
		if (strcmp(mime, safe[i]) == 0)
			return true;
	}
	return false;
}

static void on_attachment(struct http_req *req, struct store_op *op)
{
	if (op->err != SOMA_OK) {
		gw_store_error(req, op, "attachment");
		return;
	}
	const char *sha = json_string_value(json_object_get(op->row, "sha256"));
	const char *mime = json_string_value(json_object_get(op->row, "mime"));
	const char *name = json_string_value(json_object_get(op->row, "filename"));
	char path[4300], disposition[512];
	store_blob_path(path, sizeof(path), sha);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) != 0) {
		if (fd >= 0)
			close(fd);
		log_error("uploads",
			  "attachment %s: blob %s is not in %s/blobs on this node; with several nodes, data.dir/blobs "
			  "must be storage every node shares (docs/operations.md)",
			  op->task_id, sha, cfg_str(CFG_DATA_DIR));
		http_respond_error(req, 500, "blob_missing",
				   "the attachment's content is not in this node's data.dir/blobs; when several nodes "
				   "serve uploads, data.dir/blobs must be shared storage mounted on every node "
				   "(see docs/operations.md)");
		return;
	}
	snprintf(disposition, sizeof(disposition), "%s; filename=\"%s\"", inline_safe(mime) ? "inline" : "attachment",
		 name);
	http_resp_header(req, "Content-Disposition", disposition);
	http_resp_header(req, "Cache-Control", "private, max-age=86400");
	http_respond_file(req, 200, mime, fd, (size_t)sb.st_size);
}

void uploads_get_attachment(struct http_req *req, void *arg)
{
	(void)arg;
	/* on every answer, errors included: whatever a browser is made to open here runs nothing,
	 * and is a sandboxed document of its own origin if it is ever rendered */
	http_resp_header(req, "Content-Security-Policy", "default-src 'none'; sandbox");
	http_resp_header(req, "X-Content-Type-Options", "nosniff");
	struct str id = http_req_param(req, "id");
	if (!id.p || !gw_valid_id(id.p)) {
		http_respond_error(req, 404, "not_found", "attachment not found");
		return;
	}
	struct store_op *op = store_op_new(STORE_OP_ATTACHMENT_GET, req->ident.tenant);
	if (!op) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	snprintf(op->task_id, sizeof(op->task_id), "%s", id.p);
	snprintf(op->error_text, sizeof(op->error_text), "attachment %s not found", id.p);
	gw_store(req, op, on_attachment);
}
