/*
 * bus.c - the local bus driver (see bus.h): one process, subscribers on its io threads.
 */
#include "bus/bus_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/str.h"
#include "http/http.h"

#define BUCKETS	      4096
#define MAX_THREADS   64
#define LOCAL_BUCKETS 1024

struct log_entry {
	struct bus_msg *msg; /* referenced */
	int64_t gen;	     /* generation it belongs to */
	int64_t expire_ms;   /* 0 while the generation runs */
};

struct thread_count {
	struct io_thread *thr; /* io thread with subscribers */
	long count;	       /* how many */
};

struct bus_session {
	char id[BUS_KEY_MAX];			  /* session id */
	int64_t last_seq;			  /* last committed seq published, -1 unknown */
	int64_t minor;				  /* ephemerals published since last_seq */
	int64_t gen;				  /* current generation number */
	int running;				  /* generations begun and not ended (local driver) */
	struct log_entry *log;			  /* ring of ephemeral messages; grows to BUS_LOG_MAX */
	size_t log_cap;				  /* allocated entries of log */
	size_t log_head, log_len;		  /* ring position and fill */
	struct thread_count threads[MAX_THREADS]; /* io threads with subscribers */
	size_t nthreads;			  /* used entries */
	struct bus_session *next;		  /* bucket chain */
};

struct bus_sub {
	char session_id[BUS_KEY_MAX]; /* what it follows */
	struct io_thread *thr;	      /* where it lives */
	bus_deliver_fn fn;	      /* delivery callback */
	void *ctx;		      /* its argument */
	struct bus_sub *prev, *next;  /* thread-local list of the session */
};

struct local_list {
	char session_id[BUS_KEY_MAX]; /* key */
	struct bus_sub *subs;	      /* subscribers on this thread */
	struct local_list *next;      /* bucket chain */
};

struct delivery {
	char session_id[BUS_KEY_MAX]; /* whose subscribers */
	struct bus_msg *msg;	      /* one reference for this delivery */
};

static pthread_mutex_t bus_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bus_session *sessions[BUCKETS];
static int64_t window_ms;
static _Atomic long nsubs;
static __thread struct local_list *local[LOCAL_BUCKETS];

static struct bus_session *session_find(const char *id, bool create)
{
	struct bus_session **slot = &sessions[str_hash(id) % BUCKETS];
	for (struct bus_session *s = *slot; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	if (!create)
		return NULL;
	struct bus_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->last_seq = -1;
	s->next = *slot;
	*slot = s;
	return s;
}

/* Doubles the ring (from 16 entries up to BUS_LOG_MAX), keeping the order; on OOM it stays. */
static void log_grow(struct bus_session *s)
{
	size_t cap = s->log_cap ? (s->log_cap * 2 < BUS_LOG_MAX ? s->log_cap * 2 : BUS_LOG_MAX) : 16;
	struct log_entry *grown = malloc(cap * sizeof(*grown));
	if (!grown)
		return;
	for (size_t i = 0; i < s->log_len; i++)
		grown[i] = s->log[(s->log_head + i) % s->log_cap];
	free(s->log);
	s->log = grown;
	s->log_cap = cap;
	s->log_head = 0;
}

static void log_drop_expired(struct bus_session *s, int64_t now)
{
	while (s->log_len > 0) {
		struct log_entry *e = &s->log[s->log_head];
		if (e->expire_ms == 0 || e->expire_ms > now)
			break;
		bus_msg_release(e->msg);
		s->log_head = (s->log_head + 1) % s->log_cap;
		s->log_len--;
	}
}

static void session_maybe_remove(struct bus_session *s)
{
	if (s->nthreads > 0 || s->log_len > 0 || s->running > 0)
		return;
	free(s->log);
	struct bus_session **slot = &sessions[str_hash(s->id) % BUCKETS];
	while (*slot && *slot != s)
		slot = &(*slot)->next;
	if (*slot)
		*slot = s->next;
	free(s);
}

void bus_local_forget(const char *key)
{
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(key, false);
	if (s) {
		for (size_t i = 0; i < s->log_len; i++)
			bus_msg_release(s->log[(s->log_head + i) % s->log_cap].msg);
		s->log_head = s->log_len = 0;
		s->last_seq = -1;
		s->minor = 0;
		s->gen++;
		session_maybe_remove(s);
	}
	pthread_mutex_unlock(&bus_lock);
}

void bus_local_init(int64_t resume_window_ms)
{
	window_ms = resume_window_ms;
}

int64_t bus_local_window_ms(void)
{
	return window_ms;
}

void bus_sweep(void)
{
	int64_t now = clock_wall_ms();
	pthread_mutex_lock(&bus_lock);
	for (size_t b = 0; b < BUCKETS; b++) {
		for (struct bus_session *s = sessions[b], *next; s; s = next) {
			next = s->next;
			log_drop_expired(s, now);
			session_maybe_remove(s);
		}
	}
	pthread_mutex_unlock(&bus_lock);
}

void bus_local_deinit(void)
{
	pthread_mutex_lock(&bus_lock);
	for (size_t b = 0; b < BUCKETS; b++) {
		while (sessions[b]) {
			struct bus_session *s = sessions[b];
			sessions[b] = s->next;
			for (size_t i = 0; i < s->log_len; i++)
				bus_msg_release(s->log[(s->log_head + i) % s->log_cap].msg);
			free(s->log);
			free(s);
		}
	}
	pthread_mutex_unlock(&bus_lock);
}

/* ---- thread-local subscriber lists -------------------------------------------------------- */

static struct local_list *local_find(const char *id, bool create)
{
	struct local_list **slot = &local[str_hash(id) % LOCAL_BUCKETS];
	for (struct local_list *l = *slot; l; l = l->next)
		if (strcmp(l->session_id, id) == 0)
			return l;
	if (!create)
		return NULL;
	struct local_list *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	snprintf(l->session_id, sizeof(l->session_id), "%s", id);
	l->next = *slot;
	*slot = l;
	return l;
}

static void local_remove_if_empty(struct local_list *l)
{
	if (l->subs)
		return;
	struct local_list **slot = &local[str_hash(l->session_id) % LOCAL_BUCKETS];
	while (*slot && *slot != l)
		slot = &(*slot)->next;
	if (*slot)
		*slot = l->next;
	free(l);
}

static void deliver(void *arg)
{
	struct delivery *d = arg;
	struct local_list *l = local_find(d->session_id, false);
	for (struct bus_sub *sub = l ? l->subs : NULL; sub;) {
		struct bus_sub *next = sub->next; /* fn may unsubscribe sub itself */
		sub->fn(sub->ctx, d->msg);
		sub = next;
	}
	bus_msg_release(d->msg);
	free(d);
}

static void thread_count_add(struct bus_session *s, struct io_thread *thr, long delta)
{
	for (size_t i = 0; i < s->nthreads; i++) {
		if (s->threads[i].thr != thr)
			continue;
		s->threads[i].count += delta;
		if (s->threads[i].count <= 0)
			s->threads[i] = s->threads[--s->nthreads];
		return;
	}
	if (delta > 0 && s->nthreads < MAX_THREADS)
		s->threads[s->nthreads++] = (struct thread_count){thr, delta};
}

struct bus_sub *bus_subscribe(const char *session_id, struct io_thread *thr, bus_deliver_fn fn, void *ctx)
{
	struct bus_sub *sub = calloc(1, sizeof(*sub));
	struct local_list *l = sub ? local_find(session_id, true) : NULL;
	if (!l) {
		free(sub);
		return NULL;
	}
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(session_id, true);
	if (s)
		thread_count_add(s, thr, 1);
	pthread_mutex_unlock(&bus_lock);
	if (!s) {
		local_remove_if_empty(l);
		free(sub);
		return NULL;
	}
	snprintf(sub->session_id, sizeof(sub->session_id), "%s", session_id);
	sub->thr = thr;
	sub->fn = fn;
	sub->ctx = ctx;
	sub->next = l->subs;
	if (l->subs)
		l->subs->prev = sub;
	l->subs = sub;
	atomic_fetch_add(&nsubs, 1);
	return sub;
}

void bus_unsubscribe(struct bus_sub *sub)
{
	if (!sub)
		return;
	struct local_list *l = local_find(sub->session_id, false);
	if (l) {
		if (sub->prev)
			sub->prev->next = sub->next;
		else
			l->subs = sub->next;
		if (sub->next)
			sub->next->prev = sub->prev;
		local_remove_if_empty(l);
	}
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(sub->session_id, false);
	if (s) {
		thread_count_add(s, sub->thr, -1);
		log_drop_expired(s, clock_wall_ms());
		session_maybe_remove(s);
	}
	pthread_mutex_unlock(&bus_lock);
	atomic_fetch_sub(&nsubs, 1);
	free(sub);
}

long bus_subscribers(void)
{
	return atomic_load(&nsubs);
}

/* ---- publishing ----------------------------------------------------------------------------- */

/* Raises the session's known position to c (a committed seq, a base seq, or a cursor from
 * elsewhere: redis). Called with bus_lock held. */
static void raise_to(struct bus_session *s, struct bus_cursor c)
{
	if (c.seq > s->last_seq)
		s->last_seq = c.seq, s->minor = c.minor;
	else if (c.seq == s->last_seq && c.minor > s->minor)
		s->minor = c.minor;
}

/* Posts msg to every io thread with subscribers of s. Called with bus_lock held. */
static void fan_out(struct bus_session *s, struct bus_msg *msg)
{
	for (size_t i = 0; i < s->nthreads; i++) {
		struct delivery *d = malloc(sizeof(*d));
		if (!d)
			continue;
		memcpy(d->session_id, s->id, sizeof(d->session_id));
		d->msg = msg;
		atomic_fetch_add((_Atomic int *)&msg->refs, 1);
		if (http_thread_post(s->threads[i].thr, deliver, d) != SOMA_OK) {
			log_warn("bus", "io thread queue full: a live event of session %s was not delivered (%s)",
				 s->id, "its streams resume from the store on reconnect");
			bus_msg_release(msg);
			free(d);
		}
	}
}

void bus_local_publish_committed(const char *session_id, int64_t seq, const char *text, size_t len)
{
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(session_id, false);
	if (s) {
		raise_to(s, (struct bus_cursor){seq, 0});
		struct bus_msg *msg = s->nthreads ? bus_msg_new((struct bus_cursor){seq, 0}, text, len) : NULL;
		if (msg) {
			fan_out(s, msg);
			bus_msg_release(msg);
		}
		log_drop_expired(s, clock_wall_ms());
		session_maybe_remove(s);
	}
	pthread_mutex_unlock(&bus_lock);
}

/* Logs and fans out an ephemeral message at cursor c. Called with bus_lock held. */
static void put_ephemeral(struct bus_session *s, struct bus_cursor c, const char *text, size_t len)
{
	struct bus_msg *msg = bus_msg_new(c, text, len);
	if (!msg)
		return;
	if (s->log_len == s->log_cap && s->log_cap < BUS_LOG_MAX)
		log_grow(s);
	if (s->log_len == s->log_cap && s->log_cap > 0) { /* full at BUS_LOG_MAX: the oldest goes */
		bus_msg_release(s->log[s->log_head].msg);
		s->log_head = (s->log_head + 1) % s->log_cap;
		s->log_len--;
	}
	if (s->log_cap > 0) { /* (no ring at all only when memory ran out: live delivery still works) */
		s->log[(s->log_head + s->log_len) % s->log_cap] = (struct log_entry){msg, s->gen, 0};
		s->log_len++;
		atomic_fetch_add((_Atomic int *)&msg->refs, 1);
	}
	fan_out(s, msg);
	bus_msg_release(msg);
}

void bus_local_publish_ephemeral(const char *session_id, int64_t base_seq, const char *text, size_t len,
				 struct bus_cursor *out)
{
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(session_id, true);
	if (s) {
		/* a seq not published here may have ephemerals an earlier process numbered (a reply begun
		 * again after a restart): count from 100 per ms since 2025, above those, in 15 digits */
		if (base_seq > s->last_seq) {
			int64_t fresh = (clock_wall_ms() - INT64_C(1735689600000)) * 100; /* (< 0: from 1) */
			s->last_seq = base_seq, s->minor = fresh > 0 ? fresh : 0;
		}
		struct bus_cursor c = {s->last_seq, ++s->minor};
		if (out)
			*out = c;
		put_ephemeral(s, c, text, len);
	}
	pthread_mutex_unlock(&bus_lock);
}

void bus_local_put(const char *key, struct bus_cursor c, const char *text, size_t len)
{
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(key, true);
	if (s) {
		raise_to(s, c);
		put_ephemeral(s, c, text, len);
	}
	pthread_mutex_unlock(&bus_lock);
}

void bus_local_deliver(const char *key, struct bus_cursor c, const char *text, size_t len)
{
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(key, false);
	if (s) {
		raise_to(s, c);
		struct bus_msg *msg = s->nthreads ? bus_msg_new(c, text, len) : NULL;
		if (msg) {
			fan_out(s, msg);
			bus_msg_release(msg);
		}
	}
	pthread_mutex_unlock(&bus_lock);
}

/* Fans a marker (cursor {kind, kind}) out to the subscribers of key, or of every session. */
static void mark(const char *key, int64_t kind)
{
	struct bus_msg *gap = bus_msg_new((struct bus_cursor){kind, kind}, "", 0);
	if (!gap)
		return;
	pthread_mutex_lock(&bus_lock);
	for (size_t b = 0; b < BUCKETS; b++) {
		for (struct bus_session *s = sessions[b]; s; s = s->next) {
			if (s->nthreads && (!key || strcmp(key, s->id) == 0))
				fan_out(s, gap);
		}
	}
	pthread_mutex_unlock(&bus_lock);
	bus_msg_release(gap);
}

void bus_local_gap(const char *key)
{
	mark(key, -1);
}

void bus_local_end(const char *key, bool reset)
{
	mark(key, reset ? -3 : -2);
}

void bus_local_generation_begin(const char *session_id)
{
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(session_id, true);
	if (s)
		s->running++;
	pthread_mutex_unlock(&bus_lock);
}

/* Entries expire once the session's last running generation ends (replies of a session may run
 * at once; one ending must not expire another's deltas). None begun (Redis records): at once. */
void bus_local_generation_end(const char *session_id)
{
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(session_id, false);
	if (s && s->running > 0 && --s->running > 0)
		s = NULL; /* another runs on: its entries and these wait for its end */
	if (s) {
		int64_t expire = clock_wall_ms() + window_ms;
		for (size_t i = 0; i < s->log_len; i++) {
			struct log_entry *e = &s->log[(s->log_head + i) % s->log_cap];
			if (e->gen == s->gen && e->expire_ms == 0)
				e->expire_ms = expire;
		}
		s->gen++;
	}
	pthread_mutex_unlock(&bus_lock);
}

enum soma_err bus_local_snapshot(const char *session_id, struct bus_cursor after, struct bus_msg ***msgs, size_t *n,
				 int64_t *published_seq)
{
	*msgs = NULL;
	*n = 0;
	*published_seq = -1;
	pthread_mutex_lock(&bus_lock);
	struct bus_session *s = session_find(session_id, false);
	enum soma_err err = SOMA_OK;
	if (s) {
		log_drop_expired(s, clock_wall_ms());
		*published_seq = s->last_seq;
		if (s->log_len && !(*msgs = malloc(s->log_len * sizeof(**msgs))))
			err = SOMA_ERR_NOMEM;
		for (size_t i = 0; err == SOMA_OK && i < s->log_len; i++) {
			struct bus_msg *m = s->log[(s->log_head + i) % s->log_cap].msg;
			if (bus_cursor_cmp(m->cursor, after) <= 0)
				continue;
			atomic_fetch_add((_Atomic int *)&m->refs, 1);
			(*msgs)[(*n)++] = m;
		}
	}
	pthread_mutex_unlock(&bus_lock);
	return err;
}
