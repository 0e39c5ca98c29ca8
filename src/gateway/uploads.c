/*
 * uploads.c - POST /v1/uploads (multipart, field `files`, optional `session_id`); the GET side
 * is attachments.c.
 *
 * DESIGN: the connection spools the body to a temp file (never into memory); the handler hands
 * it to the upload pool, where parts are parsed from an mmap of that file, each file is hashed
 * (SHA-256), typed by its content with libmagic (never by the client's claim), and stored
 * content-addressed at data.dir/blobs/<2 hex>/<sha256> (written to a temp name, fsync'd,
 * renamed), so the same bytes are kept once and no client-supplied name ever becomes a path.
 * Every check (fields, the session being the caller's, each file's type and policy) runs before
 * the first blob is stored, so a refused upload keeps no file. Then one store op records every
 * attachment row for the caller's tenant, and the answer is posted back to the io thread.
 * Downloads are attachments.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <magic.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "core/log.h"
#include "core/pool.h"
#include "gateway/gateway.h"
#include "gateway/multipart.h"
#include "gateway/uploads_int.h"
#include "policy/gate.h"

struct upload {
	_Atomic int refs;	  /* io side + pool side */
	_Atomic bool aborted;	  /* the client left */
	struct http_req *req;	  /* valid on the io thread while !aborted */
	struct io_thread *thread; /* the request's io thread */
	int fd;			  /* dup of the spool file */
	size_t len;		  /* body length */
	char boundary[80];	  /* multipart boundary */
	char tenant[65];	  /* caller */
	int status;		  /* answer: 200 or an error status */
	char code[48];		  /* error code */
	char message[512];	  /* error message */
	json_t *result;		  /* 200 body; owned */
	/* policy (issue 6): who asks, and the deny if there was one */
	char subject[65], scopes[129], key_id[65], request_id[129];
	struct policy_decision denied; /* valid when policy_denied */
	bool policy_denied;	       /* answer 403 policy_denied */
};

static struct pool *upload_pool;
static uint64_t next_sweep_ns; /* when the next sweep of unused files is due (main thread) */
static atomic_bool sweeping;   /* one is queued or running */
/* one libmagic handle per pool thread (libmagic is not thread-safe), closed when the thread ends */
static pthread_key_t magic_key;
static pthread_once_t magic_once = PTHREAD_ONCE_INIT;

static void magic_free(void *cookie)
{
	magic_close(cookie);
}
static void magic_key_init(void)
{
	(void)pthread_key_create(&magic_key, magic_free);
}

static void upload_unref(struct upload *u)
{
	if (atomic_fetch_sub(&u->refs, 1) != 1)
		return;
	if (u->fd >= 0)
		close(u->fd);
	json_decref(u->result);
	free(u);
}

static void fail(struct upload *u, int status, const char *code, const char *fmt, const char *arg)
{
	u->status = status;
	snprintf(u->code, sizeof(u->code), "%s", code);
	snprintf(u->message, sizeof(u->message), fmt, arg);
}

static bool type_allowed(const char *mime)
{
	const char *list = cfg_str(CFG_UPLOADS_ALLOWED_TYPES);
	size_t mlen = strlen(mime);
	const char *slash = strchr(mime, '/');
	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		while (n && p[n - 1] == ' ')
			n--;
		if ((n == 3 && strncmp(p, "*/*", 3) == 0) || (n == mlen && strncmp(p, mime, n) == 0) ||
		    (slash && n >= 2 && p[n - 1] == '*' && p[n - 2] == '/' && (size_t)(slash - mime) == n - 2 &&
		     strncmp(p, mime, n - 2) == 0))
			return true;
		p += n;
		if (!*p || !e)
			break;
		p = e + 1;
	}
	return false;
}

static bool write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Stores data at data.dir/blobs/<aa>/<sha256> unless it is already there; durable on return. */
static bool store_blob(const char *sha, const char *data, size_t len)
{
	char dir[4200], path[4300], tmp[4400];
	snprintf(dir, sizeof(dir), "%s/blobs/%.2s", cfg_str(CFG_DATA_DIR), sha);
	snprintf(path, sizeof(path), "%s/%s", dir, sha);
	if (access(path, F_OK) == 0) {
		/* content-addressed: same bytes, same file; its time is set now, so the sweep of unused
		 * files (blob_sweep.c) leaves it while this upload's row is on its way */
		(void)utimensat(AT_FDCWD, path, NULL, 0);
		return true;
	}
	char parent[4200];
	snprintf(parent, sizeof(parent), "%s/blobs", cfg_str(CFG_DATA_DIR));
	if ((mkdir(parent, 0700) != 0 && errno != EEXIST) || (mkdir(dir, 0700) != 0 && errno != EEXIST))
		return false;
	snprintf(tmp, sizeof(tmp), "%s/.tmp-XXXXXX", dir);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return false;
	bool ok = write_all(fd, data, len) && fsync(fd) == 0;
	close(fd);
	ok = ok && rename(tmp, path) == 0;
	if (!ok) {
		unlink(tmp);
		return false;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return true;
}

static const char *detect_mime(const char *data, size_t len)
{
	pthread_once(&magic_once, magic_key_init);
	magic_t magic_cookie = pthread_getspecific(magic_key);
	if (!magic_cookie) {
		magic_cookie = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR);
		if (magic_cookie && magic_load(magic_cookie, NULL) != 0) {
			magic_close(magic_cookie);
			magic_cookie = NULL;
		}
		pthread_setspecific(magic_key, magic_cookie);
	}
	const char *m = magic_cookie ? magic_buffer(magic_cookie, data, len < 65536 ? len : 65536) : NULL;
	return m ? m : "application/octet-stream";
}

/* ---- policy (issue 6): upload.create asked again with each file's detected type and size. This
 * runs on an upload thread, so an OPA engine may be asked here (blocking). ---- */
static bool upload_allowed(struct upload *u, const char *mime, size_t size, const char *session)
{
	json_t *ctx = json_pack("{s:s, s:I}", "mime", mime, "size", (json_int_t)size);
	struct policy_input in = {.tenant = u->tenant,
				  .subject = u->subject,
				  .scopes = u->scopes,
				  .action = POLICY_UPLOAD_CREATE,
				  .resource = "upload",
				  .context = ctx};
	policy_decide(&in, &u->denied);
	json_decref(ctx);
	if (u->denied.allow)
		return true;
	u->status = 403;
	u->policy_denied = true;
	policy_denied_audit(&in, u->key_id, &u->denied, u->request_id);
	if (session[0])
		policy_denied_append(u->tenant, session, policy_denied_event(session, &in, &u->denied));
	return false;
}

/* The attachment row of one file part (owned by the caller); NULL only when jansson refuses it
 * (out of memory: the name was made valid UTF-8 by multipart_clean_filename). */
static json_t *file_row(const struct multipart_part *part, const char *mime, const char *sha, const char *session)
{
	char id[IDS_UUID_LEN + 1], name[MULTIPART_FILENAME_MAX + 8];
	ids_uuid7(id);
	multipart_clean_filename(part->filename, name, sizeof(name));
	return json_pack("{s:s, s:s, s:s, s:I, s:s, s:s?}", "id", id, "filename", name, "mime", mime, "size",
			 (json_int_t)part->len, "sha256", sha, "session_id", session[0] ? session : NULL);
}

/* The store's verdict on the upload's session before any file is kept (an ATTACHMENT_PUT of no
 * rows): another tenant's session is refused here, not after the blobs are written. */
static bool session_usable(struct upload *u, const char *session)
{
	if (!session[0])
		return true;
	struct store_op *op = store_op_new(STORE_OP_ATTACHMENT_PUT, u->tenant);
	if (!op) {
		fail(u, 500, "out_of_memory", "%s", "the server is out of memory; retry later");
		return false;
	}
	op->row = json_array();
	snprintf(op->session_id, sizeof(op->session_id), "%s", session);
	enum soma_err err = op->row ? store_op_wait(gateway_store(), op) : SOMA_ERR_NOMEM;
	if (err == SOMA_ERR_NOT_FOUND)
		fail(u, 404, "not_found", "%s", op->error_text);
	else if (err != SOMA_OK)
		fail(u, 503, "store_busy", "%s", "the attachments could not be recorded; retry");
	store_op_free(op);
	return err == SOMA_OK;
}

/* The form fields: the session, the file count and sizes against the limits. */
static bool check_fields(struct upload *u, const struct multipart_part *pv, int n, char *session, size_t session_cap)
{
	int files = 0;
	size_t max_bytes = (size_t)cfg_int(CFG_UPLOADS_MAX_MB) << 20;
	for (int i = 0; i < n; i++) {
		if (str_eq_cstr(pv[i].name, "session_id")) {
			/* never cut: a cut id would bind the files to another session */
			bool ok = pv[i].len <= 64 && pv[i].len < session_cap;
			if (ok)
				snprintf(session, session_cap, "%.*s", (int)pv[i].len, pv[i].data);
			if (!ok || !gw_valid_id(session)) {
				fail(u, 400, "invalid_session_id", "%s",
				     "session_id must be 1 to 64 characters of [A-Za-z0-9_-]");
				return false;
			}
		} else if (str_eq_cstr(pv[i].name, "files")) {
			if (++files > cfg_int(CFG_UPLOADS_MAX_FILES)) {
				fail(u, 413, "too_many_files", "%s", "more files than uploads.max_files in one upload");
				return false;
			}
			if (pv[i].len > max_bytes) {
				fail(u, 413, "file_too_large", "%s", "a file exceeds uploads.max_mb");
				return false;
			}
		}
	}
	if (files == 0) {
		fail(u, 400, "no_files", "%s", "send the files in the multipart field `files`");
		return false;
	}
	return true;
}

/* Types, asks the policy about and describes every file (rows, in part order); false (with
 * u->status) at the first refused one. Nothing is stored yet. */
static bool check_files(struct upload *u, const struct multipart_part *pv, int n, json_t *rows, const char *session)
{
	for (int i = 0; i < n; i++) {
		if (!str_eq_cstr(pv[i].name, "files"))
			continue;
		unsigned char digest[32];
		unsigned int dlen = 0;
		char sha[65];
		EVP_Digest(pv[i].data, pv[i].len, digest, &dlen, EVP_sha256(), NULL);
		for (int b = 0; b < 32; b++)
			snprintf(sha + 2 * b, 3, "%02x", digest[b]);
		const char *mime = detect_mime(pv[i].data, pv[i].len);
		if (!type_allowed(mime)) {
			fail(u, 415, "unsupported_type", "files of type %s are not accepted (uploads.allowed_types)",
			     mime);
			return false;
		}
		if (!upload_allowed(u, mime, pv[i].len, session))
			return false;
		if (json_array_append_new(rows, file_row(&pv[i], mime, sha, session)) != 0) {
			/* file_row is NULL only when jansson refuses it: out of memory */
			fail(u, 500, "out_of_memory", "%s", "the server is out of memory; retry later");
			return false;
		}
	}
	return true;
}

/* Parses and checks the whole upload - fields, session, every file's type and policy - and
 * only then stores the blobs, so a refused upload keeps no file; false (with u->status) on
 * failure. A blob stored before a later one fails to be written (disk full) stays until the
 * sweep of unused files: removing it here could race an upload of the same bytes that found it. */
static bool process(struct upload *u, const char *body, json_t *rows, char *session, size_t session_cap)
{
	int max = cfg_int(CFG_UPLOADS_MAX_FILES) + MULTIPART_FORM_FIELDS;
	struct multipart_part *pv = calloc((size_t)max, sizeof(*pv));
	int n = pv ? multipart_parse(body, u->len, u->boundary, pv, max) : -1;
	bool ok = false;
	if (n == MULTIPART_TOO_MANY)
		fail(u, 413, "too_many_files", "%s",
		     "more parts than uploads.max_files files and a few form fields in one upload");
	else if (n < 0)
		fail(u, 400, "invalid_multipart", "%s", "the body is not well-formed multipart/form-data");
	else
		ok = check_fields(u, pv, n, session, session_cap) && session_usable(u, session) &&
		     check_files(u, pv, n, rows, session);
	for (int i = 0, row = 0; ok && i < n; i++) {
		if (!str_eq_cstr(pv[i].name, "files"))
			continue;
		const char *sha = json_string_value(json_object_get(json_array_get(rows, (size_t)row++), "sha256"));
		if (!store_blob(sha, pv[i].data, pv[i].len)) {
			fail(u, 507, "storage_failed", "%s", "cannot store the file; check free space under data.dir");
			ok = false;
		}
	}
	free(pv);
	return ok;
}

static void on_io_done(void *arg)
{
	struct upload *u = arg;
	if (!atomic_load(&u->aborted)) {
		struct http_req *req = u->req;
		req->on_abort = NULL;
		if (u->status == 200)
			http_respond_json(req, 200, json_incref(u->result));
		else if (u->policy_denied)
			policy_gate_respond(req, &u->denied);
		else {
			if (u->status == 503)
				http_resp_header(req, "Retry-After", "1");
			http_respond_error(req, u->status, u->code, "%s", u->message);
		}
		upload_unref(u); /* the io side's reference: the request is answered */
	}
	upload_unref(u); /* the pool side's */
}

static void run_upload(void *arg)
{
	struct upload *u = arg;
	json_t *rows = json_array();
	char session[65] = "";
	void *map = u->len ? mmap(NULL, u->len, PROT_READ, MAP_PRIVATE, u->fd, 0) : MAP_FAILED;
	if (map == MAP_FAILED && u->len && errno == ENOMEM) /* not the client's fault: worth a retry */
		fail(u, 503, "out_of_memory", "%s", "the server is out of memory to map the upload; retry later");
	else if (map == MAP_FAILED)
		fail(u, 400, "invalid_multipart", "%s", "the body is empty or unreadable");
	else if (process(u, map, rows, session, sizeof(session))) {
		struct store_op *op = store_op_new(STORE_OP_ATTACHMENT_PUT, u->tenant);
		if (!op) {
			fail(u, 500, "out_of_memory", "%s", "the server is out of memory; retry later");
		} else {
			op->row = json_incref(rows);
			snprintf(op->session_id, sizeof(op->session_id), "%s", session);
			enum soma_err err = store_op_wait(gateway_store(), op);
			if (err == SOMA_ERR_NOT_FOUND)
				fail(u, 404, "not_found", "%s", op->error_text);
			else if (err != SOMA_OK)
				fail(u, 503, "store_busy", "%s", "the attachments could not be recorded; retry");
			store_op_free(op);
		}
	}
	if (map != MAP_FAILED)
		munmap(map, u->len);
	if (u->status == 0) {
		char created[CLOCK_RFC3339_LEN + 1];
		clock_rfc3339(clock_wall_ms(), created, sizeof(created));
		size_t i;
		json_t *row;
		json_array_foreach(rows, i, row)
		{
			char path[128];
			snprintf(path, sizeof(path), "/v1/attachments/%s",
				 json_string_value(json_object_get(row, "id")));
			json_object_set_new(row, "path", json_string(path));
			json_object_set_new(row, "status", json_string("stored"));
			json_object_set_new(row, "created_at", json_string(created));
			if (!json_object_get(row, "session_id"))
				json_object_set_new(row, "session_id", json_null());
		}
		u->status = 200;
		u->result = json_incref(rows);
	}
	json_decref(rows);
	enum soma_err err = http_thread_post_wait(u->thread, on_io_done, u);
	if (err != SOMA_OK) /* the io thread stopped: the request was aborted with it */
		upload_unref(u);
}

static void on_abort(struct http_req *req)
{
	struct upload *u = req->handler_ctx;
	atomic_store(&u->aborted, true);
	upload_unref(u);
}

static void post_upload(struct http_req *req, void *arg)
{
	(void)arg;
	char boundary[80];
	if (!multipart_boundary(http_req_header(req, "content-type"), boundary, sizeof(boundary))) {
		http_respond_error(req, 415, "unsupported_media_type",
				   "send multipart/form-data with the files in the field `files`");
		return;
	}
	if (req->body_fd < 0 || req->body_len == 0) { /* no body was spooled: nothing to parse */
		http_respond_error(req, 400, "invalid_multipart",
				   "the body is empty; send multipart/form-data with the files in the field `files`");
		return;
	}
	struct upload *u = calloc(1, sizeof(*u));
	if (!u) {
		http_respond_error(req, 500, "out_of_memory", "the server is out of memory; retry later");
		return;
	}
	atomic_init(&u->refs, 2);
	u->req = req;
	u->thread = req->thread;
	u->len = req->body_len;
	u->fd = dup(req->body_fd);
	snprintf(u->boundary, sizeof(u->boundary), "%s", boundary);
	snprintf(u->tenant, sizeof(u->tenant), "%s", req->ident.tenant);
	snprintf(u->subject, sizeof(u->subject), "%s", req->ident.subject);
	snprintf(u->scopes, sizeof(u->scopes), "%s", req->ident.scopes);
	snprintf(u->key_id, sizeof(u->key_id), "%s", req->ident.key_id);
	snprintf(u->request_id, sizeof(u->request_id), "%s", req->request_id);
	if (u->fd < 0 || pool_submit(upload_pool, run_upload, u) != SOMA_OK) {
		upload_unref(u);
		upload_unref(u);
		http_resp_header(req, "Retry-After", "1");
		http_respond_error(req, 503, "uploads_busy", "too many uploads in progress; retry shortly");
		return;
	}
	req->handler_ctx = u;
	req->on_abort = on_abort;
}

enum soma_err gateway_upload_start(int threads)
{
	upload_pool = pool_new(threads, (size_t)threads * 16);
	next_sweep_ns = clock_mono_ns() + (uint64_t)cfg_int(CFG_UPLOADS_SWEEP_INTERVAL_S) * 1000000000ull;
	return upload_pool ? SOMA_OK : SOMA_ERR_NOMEM;
}

static void sweep_job(void *arg)
{
	(void)arg;
	blob_sweep_run();
	atomic_store(&sweeping, false);
}

void gateway_upload_sweep_tick(void)
{
	uint64_t now = clock_mono_ns();
	if (!upload_pool || now < next_sweep_ns)
		return;
	next_sweep_ns = now + (uint64_t)cfg_int(CFG_UPLOADS_SWEEP_INTERVAL_S) * 1000000000ull;
	if (!atomic_exchange(&sweeping, true) && pool_submit(upload_pool, sweep_job, NULL) != SOMA_OK)
		atomic_store(&sweeping, false); /* the pool is full of uploads: the next tick tries again */
}

void gateway_upload_stop(void)
{
	pool_free(upload_pool);
	upload_pool = NULL;
}

enum soma_err gateway_upload_routes(struct http_router *r)
{
	size_t max = (size_t)cfg_int(CFG_UPLOADS_MAX_FILES) * ((size_t)cfg_int(CFG_UPLOADS_MAX_MB) << 20) + (1u << 20);
	enum soma_err err = http_route_add(r, "POST", "/v1/uploads", post_upload, NULL, 0);
	if (err == SOMA_OK)
		err = http_route_set_file_body(r, "POST", "/v1/uploads", max);
	if (err == SOMA_OK)
		err = http_route_add(r, "GET", "/v1/attachments/{id}", uploads_get_attachment, NULL, 0);
	return err;
}
