/*
 * pg_exec.c - the PostgreSQL connection of the store (see pg_int.h): open with timeouts, reconnect
 * with backoff, prepared statements cached per connection, text parameters, error mapping.
 *
 * DESIGN: a connection is used by one thread at a time (the writer's, a reader's, or the main one
 * behind pg.c's lock). When a query finds the connection gone it is closed at once, the op fails
 * with SOMA_ERR_UNAVAILABLE, and the next use after the backoff (100 ms, doubling to 5 s) tries to
 * connect again; the outage and its end are each logged once. A new connection starts with an
 * empty statement cache (prepared statements live and die with their session).
 * Two things shorten an outage's tail once the server is back: a connection about to be used after
 * idle time reads its socket first (pg_conn_check_idle), so a session the restart ended is replaced
 * before a request fails on it; and when any connection of this process re-establishes itself, the
 * others waiting out their backoff try again at their next use instead of answering 503 for up to
 * 5 s more (one early attempt per recovery, so a server that is still refusing is not hammered).
 * A caller that found its session ended while it held work nothing of which was applied (a message
 * lane, pg_lanes.c) connects again at once with pg_conn_reconnect (one attempt, then the backoff).
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/pg_int.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

static atomic_uint recoveries; /* connections of this process re-established after an outage */

static int64_t mono_ms(void)
{
	return (int64_t)(clock_mono_ns() / 1000000);
}

void pg_param_text(struct pg_params *p, const char *v)
{
	if (p->n < PG_PARAMS_MAX)
		p->v[p->n] = v;
	p->n++;
}

void pg_param_int(struct pg_params *p, int64_t v)
{
	if (p->n < PG_PARAMS_MAX) {
		snprintf(p->num[p->n], PG_NUM_LEN, "%" PRId64, v);
		p->v[p->n] = p->num[p->n];
	}
	p->n++;
}

void pg_param_bool(struct pg_params *p, bool v)
{
	pg_param_text(p, v ? "t" : "f");
}

/* Closes the session and schedules the next attempt after the current backoff. */
static void conn_drop(struct pgconn *c, const char *reason)
{
	/* a message lane connects again at once and resends (pg_lane_txn.c): its requests are not 503 */
	if (!c->down_logged && c->resends)
		log_warn("store",
			 "PostgreSQL connection (%s) lost: %s; the lane connects again at once and sends its messages "
			 "again (a message is answered 503 only when no connection can be made, or when its commit "
			 "was sent and is not found); reconnecting with backoff up to %d s; check store.url and the "
			 "server",
			 c->role ? c->role : "?", reason && reason[0] ? reason : "no reason given",
			 BACKOFF_MAX_MS / 1000);
	else if (!c->down_logged)
		log_warn("store",
			 "PostgreSQL connection (%s) lost: %s; requests answer 503 until it is back; "
			 "reconnecting with backoff up to %d s; check store.url and the server",
			 c->role ? c->role : "?", reason && reason[0] ? reason : "no reason given",
			 BACKOFF_MAX_MS / 1000);
	c->down_logged = true;
	if (c->conn)
		PQfinish(c->conn);
	c->conn = NULL;
	c->n = 0;
	if (c->backoff_ms < BACKOFF_MIN_MS)
		c->backoff_ms = BACKOFF_MIN_MS;
	c->retry_ms = mono_ms() + c->backoff_ms;
	c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
	c->seen_recoveries = atomic_load(&recoveries);
}

/* The server's notices and warnings go to the log (libpq would print them on stderr). */
static void notice_log(void *arg, const char *message)
{
	struct pgconn *c = arg;
	log_warn("store", "PostgreSQL (%s): %.*s", c->role ? c->role : "?", (int)strcspn(message, "\n"), message);
}

/* One connection attempt; SOMA_OK or SOMA_ERR_UNAVAILABLE with the reason in why. */
static enum soma_err conn_connect(struct pgconn *c, char *why, size_t why_cap)
{
	/* the URL first (expanded), then our settings: later keywords win over the URL's; the
	 * application_name says which of ours a session is (pg_stat_activity) */
	char app[64];
	snprintf(app, sizeof(app), "somaagent %s", c->role ? c->role : "");
	/* tcp_user_timeout: keepalives only probe an idle connection; with a query sent and the network
	 * silently dropping packets, the kernel would retransmit for ~15 minutes (the main thread's
	 * health check stuck on it, /v1/health serving its last 'ok'): 30 s of unacknowledged data ends
	 * the connection instead (a long query sends nothing unacknowledged: it is not cut) */
	static const char *const keys[] = {"dbname",
					   "connect_timeout",
					   "keepalives",
					   "keepalives_idle",
					   "keepalives_interval",
					   "keepalives_count",
					   "tcp_user_timeout",
					   "options",
					   "application_name",
					   "client_encoding",
					   NULL};
	const char *vals[] = {
		c->url,
		"5",
		"1",
		"10",
		"5",
		"3",
		"30000",
		"-c synchronous_commit=on -c TimeZone=UTC -c statement_timeout=60000 -c client_min_messages=warning",
		app,
		"UTF8",
		NULL};
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		const char *msg = conn ? PQerrorMessage(conn) : "out of memory";
		snprintf(why, why_cap, "%.*s", (int)strcspn(msg, "\n"), msg);
		PQfinish(conn);
		return SOMA_ERR_UNAVAILABLE;
	}
	PQsetNoticeProcessor(conn, notice_log, c);
	c->conn = conn;
	c->n = 0;
	c->backoff_ms = BACKOFF_MIN_MS;
	c->retry_ms = 0;
	return SOMA_OK;
}

enum soma_err pg_conn_open(struct pgconn *c, const char *url, const char *role, char *why, size_t why_cap)
{
	memset(c, 0, sizeof(*c));
	c->url = url;
	c->role = role;
	c->backoff_ms = BACKOFF_MIN_MS;
	char buf[512];
	enum soma_err err = conn_connect(c, why ? why : buf, why ? why_cap : sizeof(buf));
	if (err != SOMA_OK) {
		c->down_logged = true; /* the caller reports this first failure */
		c->retry_ms = mono_ms() + c->backoff_ms;
	}
	return err;
}

void pg_conn_close(struct pgconn *c)
{
	if (c->conn)
		PQfinish(c->conn);
	c->conn = NULL;
	c->n = 0;
}

bool pg_conn_up(const struct pgconn *c)
{
	return c->conn && PQstatus(c->conn) == CONNECTION_OK;
}

enum soma_err pg_conn_ready(struct pgconn *c)
{
	if (pg_conn_up(c))
		return SOMA_OK;
	if (c->conn)
		conn_drop(c, PQerrorMessage(c->conn));
	if (mono_ms() < c->retry_ms && c->seen_recoveries == atomic_load(&recoveries))
		return SOMA_ERR_UNAVAILABLE;
	char why[512];
	if (conn_connect(c, why, sizeof(why)) != SOMA_OK) {
		conn_drop(c, why);
		return SOMA_ERR_UNAVAILABLE;
	}
	if (c->down_logged) {
		log_info("store", "PostgreSQL connection (%s) re-established", c->role ? c->role : "?");
		atomic_fetch_add(&recoveries, 1);
	}
	c->down_logged = false;
	return SOMA_OK;
}

enum soma_err pg_conn_reconnect(struct pgconn *c)
{
	if (c->conn && !pg_conn_up(c))
		conn_drop(c, PQerrorMessage(c->conn));
	if (!c->conn)
		c->retry_ms = 0; /* once: a failed attempt schedules the next after the backoff */
	return pg_conn_ready(c);
}

void pg_conn_check_idle(struct pgconn *c)
{
	if (!pg_conn_up(c))
		return;
	if (PQconsumeInput(c->conn) && PQstatus(c->conn) == CONNECTION_OK)
		return; /* nothing, or a notice: the session is alive */
	conn_drop(c, PQerrorMessage(c->conn));
	c->retry_ms = 0; /* the server may be back already: connect at the next use */
}

enum soma_err pg_err_map(struct pgconn *c, const PGresult *r)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorMessage(r) : c->conn ? PQerrorMessage(c->conn) : "no connection";
	c->retryable = state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0);
	if (c->retryable) { /* the writer and the lanes run the transaction again (a few times) */
		log_warn("store", "PostgreSQL (%s) [%s]: %.*s; its transaction is rolled back (and run again)",
			 c->role ? c->role : "?", state, (int)strcspn(msg, "\n"), msg);
		return SOMA_ERR_UNAVAILABLE;
	}
	if (!pg_conn_up(c) || (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0))) {
		conn_drop(c, msg);
		return SOMA_ERR_UNAVAILABLE;
	}
	if (state && strcmp(state, "23505") == 0)
		return SOMA_ERR_CONFLICT;
	/* disk_full (the rest of class 53 is memory and connection limits, not a disk): 507, the same
	 * answer as SQLite's; logged once per 10 s with a count, not once per failed statement */
	if (state && strcmp(state, "53100") == 0) {
		static _Atomic int64_t logged_ms;
		static atomic_long quiet;
		int64_t now = clock_wall_ms(), last = atomic_load(&logged_ms);
		if (now - last < 10000 || !atomic_compare_exchange_strong(&logged_ms, &last, now)) {
			atomic_fetch_add(&quiet, 1);
			return SOMA_ERR_FULL;
		}
		log_error(
			"store",
			"PostgreSQL (%s): its disk is full (%.*s): writes are refused with 507 storage_full, %ld more "
			"since the last such line; free space on the database server",
			c->role ? c->role : "?", (int)strcspn(msg, "\n"), msg, atomic_exchange(&quiet, 0));
		return SOMA_ERR_FULL;
	}
	if (state && strncmp(state, "23", 2) == 0)
		return SOMA_ERR_INVALID;
	if (state && (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0)) {
		log_warn("store", "PostgreSQL (%s): %.*s; the request is answered 503 and may be retried",
			 c->role ? c->role : "?", (int)strcspn(msg, "\n"), msg);
		return SOMA_ERR_UNAVAILABLE;
	}
	log_error("store", "PostgreSQL (%s) [%s]: %.*s", c->role ? c->role : "?", state ? state : "-",
		  (int)strcspn(msg, "\n"), msg);
	return SOMA_ERR_STORE;
}

static bool result_ok(const PGresult *r)
{
	ExecStatusType s = PQresultStatus(r);
	return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

bool pg_prepared(struct pgconn *c, const char *sql, char name[PG_STMT_NAME], enum soma_err *err)
{
	if ((*err = pg_conn_ready(c)) != SOMA_OK)
		return false;
	int i = 0;
	while (i < c->n && c->cache[i].sql != sql)
		i++;
	if (i == c->n && c->n == PG_STMT_CACHE) {
		name[0] = '\0'; /* cache full: the caller runs it unprepared */
		return true;
	}
	snprintf(name, PG_STMT_NAME, "s%d", i);
	if (i < c->n)
		return true;
	PGresult *r = PQprepare(c->conn, name, sql, 0, NULL);
	if (!r || !result_ok(r)) {
		*err = pg_err_map(c, r);
		PQclear(r);
		return false;
	}
	PQclear(r);
	c->cache[c->n++].sql = sql;
	return true;
}

PGresult *pg_exec(struct pgconn *c, const char *sql, const struct pg_params *p, enum soma_err *err)
{
	int n = p ? p->n : 0;
	if (n > PG_PARAMS_MAX) {
		*err = SOMA_ERR_INTERNAL;
		return NULL;
	}
	const char *const *vals = p ? p->v : NULL;
	char name[PG_STMT_NAME];
	if (!pg_prepared(c, sql, name, err))
		return NULL;
	PGresult *r = name[0] ? PQexecPrepared(c->conn, name, n, vals, NULL, NULL, 0)
			      : PQexecParams(c->conn, sql, n, NULL, vals, NULL, NULL, 0);
	if (r && result_ok(r))
		return r;
	*err = pg_err_map(c, r);
	PQclear(r);
	return NULL;
}

enum soma_err pg_run(struct pgconn *c, const char *sql, const struct pg_params *p, int64_t *changed)
{
	enum soma_err err;
	PGresult *r = pg_exec(c, sql, p, &err);
	if (!r)
		return err;
	if (changed)
		*changed = strtoll(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return SOMA_OK;
}

enum soma_err pg_cmd(struct pgconn *c, const char *sql)
{
	enum soma_err err = pg_conn_ready(c);
	if (err != SOMA_OK)
		return err;
	PGresult *r = PQexec(c->conn, sql);
	err = r && result_ok(r) ? SOMA_OK : pg_err_map(c, r);
	/* COMMIT of a transaction that failed answers ROLLBACK: nothing was committed */
	if (err == SOMA_OK && strcmp(PQcmdStatus(r), "ROLLBACK") == 0 && strncmp(sql, "ROLLBACK", 8) != 0)
		err = SOMA_ERR_STORE;
	PQclear(r);
	return err;
}

enum soma_err pg_commit_result(struct pgconn *c)
{
	enum soma_err err = SOMA_OK;
	PGresult *r;
	bool any = false;
	while (c->conn && (r = PQgetResult(c->conn))) {
		any = true;
		if (err == SOMA_OK && !result_ok(r))
			err = pg_err_map(c, r); /* may drop the connection (c->conn NULL) */
		else if (err == SOMA_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0)
			err = SOMA_ERR_STORE; /* the transaction had failed: ROLLBACK */
		PQclear(r);
	}
	if (!any && err == SOMA_OK)
		err = pg_err_map(c, NULL);
	return err;
}

const char *pg_text(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

int64_t pg_int(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

bool pg_bool(const PGresult *r, int row, int col)
{
	return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

bool pg_page_params(const struct store_op *op, struct pg_params *p, char id[STORE_TASK_ID_MAX + 1])
{
	long long ms;
	if (!store_page_cursor(op, &ms, id))
		return false;
	pg_param_int(p, ms);
	pg_param_text(p, id);
	pg_param_int(p, op->limit + 1);
	return true;
}

void pg_page_next(struct store_op *op, const PGresult *r, int ms_col, int id_col)
{
	op->next_cursor[0] = '\0';
	if (op->limit > 0 && PQntuples(r) > op->limit)
		snprintf(op->next_cursor, sizeof(op->next_cursor), "%lld:%s",
			 (long long)pg_int(r, (int)op->limit - 1, ms_col), pg_text(r, (int)op->limit - 1, id_col));
}
