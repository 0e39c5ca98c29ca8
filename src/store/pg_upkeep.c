/*
 * pg_upkeep.c - the PostgreSQL driver's upkeep thread: the memory index's pending list merged in
 * the background (see pg_int.h).
 *
 * DESIGN: memories_tsv is a GIN index with fastupdate: an insert appends its entries to the
 * index's pending list, and the insert that finds the list over gin_pending_list_limit (4 MB by
 * default) merges the whole list into the index itself, inside its own statement. Under steady
 * ingest that insert is a message lane's transaction, and every message behind it waits (p99 of
 * 40-100 ms in bench/ingest_pg.sh once the list had filled a few times). So this thread merges
 * the list on its own connection, a few hundred rows at a time: every UPKEEP_EVERY_MS, when rows
 * were added since (pg_upkeep_rows_added), gin_clean_pending_list. The lanes' inserts go on
 * meanwhile (PostgreSQL lets an insert skip its own merge while another one runs), and the list
 * stays far below the limit, so a lane never meets a full one. The function needs the owner of the
 * index (the role that ran the migrations): any other role gets one warning, and the inserts merge
 * the list themselves, as before. Connection failures are retried at the next turn.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/pg_int.h"

#define UPKEEP_EVERY_MS 250

struct pg_upkeep {
	char url[2048];	      /* store.url */
	struct pgconn conn;   /* the upkeep's own connection (opened at its first merge) */
	bool opened;	      /* conn was opened once (it reconnects by itself since) */
	pthread_t tid;	      /* the thread */
	pthread_mutex_t lock; /* guards stop */
	pthread_cond_t wake;  /* signalled at stop */
	bool stop;	      /* pg_upkeep_stop was called */
};

static atomic_long rows_added; /* memories rows inserted since the last merge, process-wide */

void pg_upkeep_rows_added(long n)
{
	atomic_fetch_add_explicit(&rows_added, n, memory_order_relaxed);
}

/* One merge, when rows were added; the rows it covers are taken off the count only once it
 * succeeded (a server away: again at the next turn). False when the server refused it for good
 * (not the owner of the index). */
static bool merge(struct pg_upkeep *u)
{
	long added = atomic_load_explicit(&rows_added, memory_order_relaxed);
	if (added == 0)
		return true;
	if (!u->opened) { /* later outages: pg_exec reconnects, with its backoff */
		char why[512];
		u->opened = true;
		if (pg_conn_open(&u->conn, u->url, "upkeep", why, sizeof(why)) != SOMA_OK)
			return true;
	}
	enum soma_err err = pg_run(&u->conn, "SELECT gin_clean_pending_list('memories_tsv'::regclass)", NULL, NULL);
	if (err == SOMA_OK)
		atomic_fetch_sub_explicit(&rows_added, added, memory_order_relaxed);
	if (err == SOMA_OK || err == SOMA_ERR_UNAVAILABLE || !pg_conn_up(&u->conn))
		return true;
	log_warn("store",
		 "cannot merge the memory index's pending list in the background (%s: the store's role must own "
		 "the memories table); inserts merge it themselves",
		 soma_err_str(err));
	return false;
}

static void *upkeep_main(void *arg)
{
	struct pg_upkeep *u = arg;
	pthread_setname_np(pthread_self(), "soma-pg-upkeep");
	bool merging = true;
	pthread_mutex_lock(&u->lock);
	while (!u->stop) {
		struct timespec until = clock_deadline_in(CLOCK_REALTIME, UPKEEP_EVERY_MS);
		pthread_cond_timedwait(&u->wake, &u->lock, &until);
		if (u->stop || !merging)
			continue;
		pthread_mutex_unlock(&u->lock);
		merging = merge(u);
		pthread_mutex_lock(&u->lock);
	}
	pthread_mutex_unlock(&u->lock);
	pg_conn_close(&u->conn);
	return NULL;
}

struct pg_upkeep *pg_upkeep_start(const char *url)
{
	struct pg_upkeep *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	snprintf(u->url, sizeof(u->url), "%s", url);
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->wake, NULL);
	if (pthread_create(&u->tid, NULL, upkeep_main, u) != 0) {
		pthread_mutex_destroy(&u->lock);
		pthread_cond_destroy(&u->wake);
		free(u);
		return NULL;
	}
	return u;
}

void pg_upkeep_stop(struct pg_upkeep *u)
{
	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	u->stop = true;
	pthread_cond_signal(&u->wake);
	pthread_mutex_unlock(&u->lock);
	pthread_join(u->tid, NULL);
	pthread_mutex_destroy(&u->lock);
	pthread_cond_destroy(&u->wake);
	free(u);
}
