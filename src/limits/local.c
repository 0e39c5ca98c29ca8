/*
 * local.c - the in-process limits driver: every tenant's counters in this process's memory.
 *
 * DESIGN: tenants hash to one of SHARDS shards, each a mutex and a fixed open-addressed table
 * (allocated on the shard's first use, never grown). A lookup probes at most PROBES slots; slots
 * are never emptied, so probe chains stay intact. A tenant that finds neither its slot nor a
 * free one takes over the least recently seen of the probed slots that holds no open stream
 * (its counters start afresh); if every probed slot holds streams, the tenant is not counted:
 * its requests and tokens pass, its streams are refused. With SHARDS x SLOTS = 16384 tenants per
 * node that only happens under a flood of distinct tenants, which only authenticated callers can
 * make. Counters are per node: N gateway nodes allow N times the rate until the Redis driver.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "limits/limits.h"
#include "store/store.h"

#define SHARDS 64
#define SLOTS  256 /* per shard */
#define PROBES 16

struct entry {
	char tenant[STORE_ID_MAX + 1]; /* "" when the slot is free */
	struct limits_bucket bucket;   /* request rate */
	int64_t day;		       /* UTC day of tokens */
	int64_t tokens;		       /* LLM tokens used that day */
	int64_t streams;	       /* event streams open now */
	uint64_t seen_ns;	       /* last use (eviction order) */
};

struct shard {
	pthread_mutex_t lock;  /* guards entries */
	struct entry *entries; /* SLOTS entries, allocated on first use; NULL before */
};

struct local {
	struct shard shards[SHARDS];
};

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

/* The tenant's entry in its locked shard, or NULL (see the file comment). */
static struct entry *find(struct shard *sh, const char *tenant, uint64_t h, uint64_t now)
{
	if (!sh->entries && !(sh->entries = calloc(SLOTS, sizeof(struct entry))))
		return NULL;
	struct entry *victim = NULL;
	for (size_t i = 0; i < PROBES; i++) {
		struct entry *e = &sh->entries[(h / SHARDS + i) % SLOTS];
		if (e->tenant[0] && strncmp(e->tenant, tenant, STORE_ID_MAX) == 0) {
			e->seen_ns = now;
			return e;
		}
		if (!e->tenant[0]) {
			victim = e;
			break;
		}
		if (e->streams == 0 && (!victim || e->seen_ns < victim->seen_ns))
			victim = e;
	}
	if (!victim)
		return NULL;
	*victim = (struct entry){.seen_ns = now};
	size_t n = strlen(tenant);
	memcpy(victim->tenant, tenant, n < STORE_ID_MAX ? n : STORE_ID_MAX);
	return victim;
}

static struct shard *lock_shard(struct local *l, const char *tenant, uint64_t *h)
{
	*h = hash(tenant);
	struct shard *sh = &l->shards[*h % SHARDS];
	pthread_mutex_lock(&sh->lock);
	return sh;
}

static bool request_take(void *ctx, const char *tenant, double rate, double burst, uint64_t now_ns, double *retry_s)
{
	uint64_t h;
	struct shard *sh = lock_shard(ctx, tenant, &h);
	struct entry *e = find(sh, tenant, h, now_ns);
	bool ok = !e || limits_bucket_take(&e->bucket, rate, burst, now_ns, retry_s);
	pthread_mutex_unlock(&sh->lock);
	return ok;
}

static int64_t tokens_used(void *ctx, const char *tenant, int64_t day)
{
	uint64_t h;
	struct shard *sh = lock_shard(ctx, tenant, &h);
	struct entry *e = find(sh, tenant, h, clock_mono_ns());
	int64_t used = e && e->day == day ? e->tokens : 0;
	pthread_mutex_unlock(&sh->lock);
	return used;
}

static void tokens_add(void *ctx, const char *tenant, int64_t day, int64_t n)
{
	uint64_t h;
	struct shard *sh = lock_shard(ctx, tenant, &h);
	struct entry *e = find(sh, tenant, h, clock_mono_ns());
	if (e) {
		if (e->day != day) {
			e->day = day;
			e->tokens = 0;
		}
		e->tokens += n;
	}
	pthread_mutex_unlock(&sh->lock);
}

static bool stream_acquire(void *ctx, const char *tenant, int64_t max)
{
	uint64_t h;
	struct shard *sh = lock_shard(ctx, tenant, &h);
	struct entry *e = find(sh, tenant, h, clock_mono_ns());
	bool ok = e && e->streams < max;
	if (ok)
		e->streams++;
	pthread_mutex_unlock(&sh->lock);
	return ok;
}

static void stream_release(void *ctx, const char *tenant)
{
	uint64_t h;
	struct shard *sh = lock_shard(ctx, tenant, &h);
	struct entry *e = find(sh, tenant, h, clock_mono_ns());
	if (e && e->streams > 0)
		e->streams--;
	pthread_mutex_unlock(&sh->lock);
}

static void local_free(void *ctx)
{
	struct local *l = ctx;
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_destroy(&l->shards[i].lock);
		free(l->shards[i].entries);
	}
	free(l);
}

struct limits_driver *limits_local_new(void)
{
	struct local *l = calloc(1, sizeof(*l));
	struct limits_driver *d = calloc(1, sizeof(*d));
	if (!l || !d) {
		free(l);
		free(d);
		return NULL;
	}
	for (int i = 0; i < SHARDS; i++)
		pthread_mutex_init(&l->shards[i].lock, NULL);
	*d = (struct limits_driver){"local",	    request_take,   tokens_used, tokens_add,
				    stream_acquire, stream_release, local_free,	 l};
	return d;
}
