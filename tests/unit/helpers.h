/*
 * helpers.h - small shared helpers for the unit tests: temporary files and directories, and
 * a parser for the HTTP responses the pipeline writes into an evbuffer.
 *
 * DESIGN: header-only (static inline) so each test executable stays a single translation unit
 * as meson.build expects. Every helper that allocates says who frees; temporary paths live
 * under $TMPDIR-independent /tmp and are removed by the test that made them.
 */
#ifndef SOMA_TESTS_UNIT_HELPERS_H
#define SOMA_TESTS_UNIT_HELPERS_H

#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "store/store.h"

/* Writes text to a new temporary file; its path goes into path[cap]. The caller unlinks it. */
/* First column of the first row of sql (one text parameter) run read-only on the database in
 * data_dir, as an integer; -1 when there is no row. */
static inline int64_t db_query_int(const char *data_dir, const char *sql, const char *arg)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/somaagent.db", data_dir);
	sqlite3 *db;
	sqlite3_stmt *s;
	cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
	sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
	int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

static inline void tmpfile_write(const char *text, char *path, size_t cap)
{
	cr_assert(cap > 32);
	snprintf(path, cap, "/tmp/soma-unit-XXXXXX");
	int fd = mkstemp(path);
	cr_assert(fd >= 0, "mkstemp failed");
	size_t len = strlen(text);
	cr_assert_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
}

/* Makes a new empty directory; its path goes into path[cap]. Remove it with tmpdir_remove(). */
static inline void tmpdir_make(char *path, size_t cap)
{
	cr_assert(cap > 32);
	snprintf(path, cap, "/tmp/soma-unit-XXXXXX");
	cr_assert_not_null(mkdtemp(path), "mkdtemp failed");
}

static inline int tmpdir_remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes a directory made by tmpdir_make() and everything in it. */
static inline void tmpdir_remove(const char *path)
{
	nftw(path, tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- a store in a temp dir ------------------------------------------------------------------- */

/* Opens a migrated SQLite store in a new temp dir (its path into dir[cap]) and starts its threads
 * (two readers). Close it with store_test_close(). */
static inline struct store *store_test_open(char *dir, size_t cap)
{
	char why[256] = "";
	struct store *st = NULL;
	tmpdir_make(dir, cap);
	cr_assert_eq(store_open(dir, &st, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(store_migrate(st, NULL), SOMA_OK);
	cr_assert_eq(store_exec_start(st, 2), SOMA_OK);
	return st;
}

/* TASK_RESERVE on queue as worker w1 for visibility_ms: the reserved task (the caller's), or NULL
 * when none is ready. */
static inline json_t *store_test_reserve(struct store *st, const char *queue, int64_t visibility_ms)
{
	struct store_op *op = store_op_new(STORE_OP_TASK_RESERVE, "");
	cr_assert_not_null(op);
	snprintf(op->queue, sizeof(op->queue), "%s", queue);
	snprintf(op->worker, sizeof(op->worker), "w1");
	op->delay_ms = visibility_ms;
	enum soma_err err = store_op_wait(st, op);
	cr_assert(err == SOMA_OK || err == SOMA_ERR_NOT_FOUND, "reserve: %s", soma_err_str(err));
	json_t *t = json_incref(op->session);
	store_op_free(op);
	return t;
}

/* Asserts t (freed here) is task id at its attempts-th attempt. */
static inline void store_test_assert_reserved(json_t *t, const char *id, int64_t attempts)
{
	cr_assert_not_null(t, "task %s was not reserved", id);
	cr_assert_str_eq(json_string_value(json_object_get(t, "id")), id);
	cr_assert_eq(json_integer_value(json_object_get(t, "attempts")), attempts, "attempts of %s", id);
	json_decref(t);
}

/* Closes a store of store_test_open() and removes its dir. */
static inline void store_test_close(struct store *st, const char *dir)
{
	store_close(st);
	tmpdir_remove(dir);
}

/* ---- HTTP responses -------------------------------------------------------------------------- */

/* One response taken out of an evbuffer. All strings are owned by the struct. */
struct test_resp {
	char *raw;	  /* whole response, NUL-terminated; malloc'd */
	size_t raw_len;	  /* bytes in raw */
	int status;	  /* from the status line */
	const char *body; /* first byte after the blank line (into raw) */
	size_t body_len;  /* bytes after the blank line */
};

/* Drains out into r. Free with test_resp_free(). */
static inline void test_resp_take(struct evbuffer *out, struct test_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->raw_len = evbuffer_get_length(out);
	r->raw = malloc(r->raw_len + 1);
	cr_assert_not_null(r->raw);
	cr_assert_eq(evbuffer_remove(out, r->raw, r->raw_len), (int)r->raw_len);
	r->raw[r->raw_len] = '\0';
	cr_assert(strncmp(r->raw, "HTTP/1.1 ", 9) == 0, "not a response: %s", r->raw);
	r->status = (int)strtol(r->raw + 9, NULL, 10);
	const char *end = strstr(r->raw, "\r\n\r\n");
	cr_assert_not_null(end, "response head does not end: %s", r->raw);
	r->body = end + 4;
	r->body_len = r->raw_len - (size_t)(r->body - r->raw);
}

static inline void test_resp_free(struct test_resp *r)
{
	free(r->raw);
	r->raw = NULL;
}

/* Value of header name (case-insensitive) copied into out[cap]; false when absent. */
static inline bool test_resp_header(const struct test_resp *r, const char *name, char *out, size_t cap)
{
	size_t n = strlen(name);
	const char *line = strstr(r->raw, "\r\n");
	while (line && line + 2 < r->body) {
		line += 2;
		const char *eol = strstr(line, "\r\n");
		if (!eol || eol == line)
			break;
		if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
			const char *v = line + n + 1;
			while (*v == ' ')
				v++;
			snprintf(out, cap, "%.*s", (int)(eol - v), v);
			return true;
		}
		line = eol;
	}
	return false;
}

/* Number of header lines named name (case-insensitive). */
static inline int test_resp_header_count(const struct test_resp *r, const char *name)
{
	int count = 0;
	size_t n = strlen(name);
	for (const char *line = strstr(r->raw, "\r\n"); line && line + 2 < r->body; line = strstr(line + 2, "\r\n")) {
		if (strncasecmp(line + 2, name, n) == 0 && line[2 + n] == ':')
			count++;
	}
	return count;
}

#endif
