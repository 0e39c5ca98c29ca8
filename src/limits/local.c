/*
 * local.c - the in-process limits driver: every tenant's counters in this process's memory.
 *
 * DESIGN: tenants hash to one of SHARDS shards, each a mutex and a chained hash table that grows
 * (doubling) as tenants come. A tenant's entry is never dropped while it holds anything: tokens of
 * the newest day the shard has counted, an open stream, or a request bucket not yet refilled. When
 * a shard's table fills, entries at rest (holding none of those) are swept first, and the table
 * grows only if that freed too little: so a flood of distinct tenants cannot reset another
 * tenant's budget or rate (it could with the fixed table before, which took over the least
 * recently seen slot), and memory follows the tenants active now. Only authenticated callers make
 * tenants. A lookup that only reads (tokens_used, stream_release) never creates an entry. If an
 * entry cannot be allocated (out of memory) the tenant is not counted: its requests and tokens
 * pass, its streams are refused. Counters are per node: N gateway nodes allow N times the rate.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "limits/limits.h"
#include "store/store.h"

#define SHARDS	      64
#define FIRST_BUCKETS 16 /* per shard, at its first tenant */

struct entry {
	struct entry *next;	       /* in its hash chain */
	uint64_t hash;		       /* of tenant */
	char tenant[STORE_ID_MAX + 1]; /* the key */
	struct limits_bucket bucket;   /* request rate */
	double rate, burst;	       /* the bucket's last refill settings (whether it is full again) */
	int64_t day;		       /* UTC day of tokens */
	int64_t tokens;		       /* LLM tokens used that day */
	int64_t streams;	       /* event streams open now */
};

struct shard {
	pthread_mutex_t lock;	/* guards the rest */
	struct entry **buckets; /* nbuckets chains; NULL before the first tenant */
	size_t nbuckets, count; /* chains, entries */
	int64_t newest_day;	/* the latest day any entry counted tokens of */
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

static size_t chain_of(const struct shard *sh, uint64_t h)
{
	return (size_t)(h / SHARDS) % sh->nbuckets;
}

/* Whether e holds nothing that dropping it would lose at now_ns. */
static bool at_rest(const struct shard *sh, const struct entry *e, uint64_t now_ns)
{
	if (e->streams > 0 || (e->tokens > 0 && e->day >= sh->newest_day))
		return false;
	if (!e->bucket.primed || e->rate <= 0)
		return true;
	double refilled = e->bucket.tokens + (double)(now_ns - e->bucket.last_ns) / 1e9 * e->rate;
	return now_ns >= e->bucket.last_ns && refilled >= e->burst;
}

/* Drops the entries at rest. */
static void sweep(struct shard *sh, uint64_t now_ns)
{
	for (size_t i = 0; i < sh->nbuckets; i++) {
		for (struct entry **p = &sh->buckets[i]; *p;) {
			struct entry *e = *p;
			if (at_rest(sh, e, now_ns)) {
				*p = e->next;
				free(e);
				sh->count--;
			} else {
				p = &e->next;
			}
		}
	}
}

/* Doubles the chains (or makes the first ones); false on OOM, the table unchanged. */
static bool grow(struct shard *sh)
{
	size_t n = sh->nbuckets ? sh->nbuckets * 2 : FIRST_BUCKETS;
	struct entry **fresh = calloc(n, sizeof(*fresh));
	if (!fresh)
		return false;
	for (size_t i = 0; i < sh->nbuckets; i++) {
		while (sh->buckets[i]) {
			struct entry *e = sh->buckets[i];
			sh->buckets[i] = e->next;
			size_t c = (size_t)(e->hash / SHARDS) % n;
			e->next = fresh[c];
			fresh[c] = e;
		}
	}
	free(sh->buckets);
	sh->buckets = fresh;
	sh->nbuckets = n;
	return true;
}

/* The tenant's entry in its locked shard; created when `create` (NULL on OOM), else NULL when it
 * has none. */
static struct entry *find(struct shard *sh, const char *tenant, uint64_t h, bool create)
{
	if (sh->nbuckets) {
		for (struct entry *e = sh->buckets[chain_of(sh, h)]; e; e = e->next) {
			if (e->hash == h && strncmp(e->tenant, tenant, STORE_ID_MAX) == 0)
				return e;
		}
	}
	if (!create)
		return NULL;
	if (sh->count >= sh->nbuckets) {
		uint64_t now = clock_mono_ns();
		if (sh->nbuckets)
			sweep(sh, now);
		if (sh->count >= sh->nbuckets / 4 * 3 && !grow(sh) && !sh->nbuckets)
			return NULL;
	}
	struct entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->hash = h;
	size_t n = strlen(tenant);
	memcpy(e->tenant, tenant, n < STORE_ID_MAX ? n : STORE_ID_MAX);
	size_t c = chain_of(sh, h);
	e->next = sh->buckets[c];
	sh->buckets[c] = e;
	sh->count++;
	return e;
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
	struct entry *e = find(sh, tenant, h, true);
	bool ok = !e || limits_bucket_take(&e->bucket, rate, burst, now_ns, retry_s);
	if (e) {
		e->rate = rate;
		e->burst = burst;
	}
	pthread_mutex_unlock(&sh->lock);
	return ok;
}

static int64_t tokens_used(void *ctx, const char *tenant, int64_t day)
{
	uint64_t h;
	struct shard *sh = lock_shard(ctx, tenant, &h);
	struct entry *e = find(sh, tenant, h, false);
	int64_t used = e && e->day == day ? e->tokens : 0;
	pthread_mutex_unlock(&sh->lock);
	return used;
}

static void tokens_add(void *ctx, const char *tenant, int64_t day, int64_t n)
{
	uint64_t h;
	struct shard *sh = lock_shard(ctx, tenant, &h);
	struct entry *e = find(sh, tenant, h, true);
	if (e) {
		if (e->day != day) {
			e->day = day;
			e->tokens = 0;
		}
		e->tokens += n;
		if (day > sh->newest_day)
			sh->newest_day = day;
	}
	pthread_mutex_unlock(&sh->lock);
}

static bool stream_acquire(void *ctx, const char *tenant, int64_t max)
{
	uint64_t h;
	struct shard *sh = lock_shard(ctx, tenant, &h);
	struct entry *e = find(sh, tenant, h, true);
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
	struct entry *e = find(sh, tenant, h, false);
	if (e && e->streams > 0)
		e->streams--;
	pthread_mutex_unlock(&sh->lock);
}

static void local_free(void *ctx)
{
	struct local *l = ctx;
	for (int i = 0; i < SHARDS; i++) {
		struct shard *sh = &l->shards[i];
		for (size_t c = 0; c < sh->nbuckets; c++) {
			while (sh->buckets[c]) {
				struct entry *e = sh->buckets[c];
				sh->buckets[c] = e->next;
				free(e);
			}
		}
		free(sh->buckets);
		pthread_mutex_destroy(&sh->lock);
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
