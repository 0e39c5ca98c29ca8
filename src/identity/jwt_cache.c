/*
 * jwt_cache.c - the identities of verified JWTs, cached per io thread (see jwt_int.h).
 *
 * DESIGN: each thread that verifies JWTs gets its own table on first use (freed when the thread
 * exits), so the request path takes no lock. The table is set-associative: CACHE_SETS sets of
 * CACHE_WAYS entries, the set chosen by the first bytes of SHA-256(token), the least recently
 * used entry of a set replaced; 512 entries (~200 KB) per thread keep hundreds of clients per io
 * thread from evicting each other (a miss costs a signature check: up to ~0.4 ms for RS256/ES256
 * with libjwt, which parses the PEM key each time). An entry is trusted only under the
 * configuration epoch and JWKS generation it was verified under and until its until_ms.
 */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "identity/jwt_int.h"

#define CACHE_SETS 128
#define CACHE_WAYS 4

struct cached {
	unsigned char hash[32]; /* SHA-256 of the token */
	int64_t until_ms;	/* wall time the entry stops being trusted; 0: empty */
	uint64_t gen;		/* jwks_generation() it was verified under */
	uint64_t epoch;		/* configuration it was verified under */
	uint64_t used;		/* the table's tick when last used (LRU within the set) */
	struct identity ident;	/* what it resolved to */
};

struct table {
	uint64_t tick;				    /* bumped on every use */
	struct cached sets[CACHE_SETS][CACHE_WAYS]; /* entries */
};

static pthread_key_t table_key;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void make_key(void)
{
	if (pthread_key_create(&table_key, free) != 0)
		abort(); /* only fails when the process is out of keys: a programming error */
}

static struct table *table(bool create)
{
	pthread_once(&table_once, make_key);
	struct table *t = pthread_getspecific(table_key);
	if (!t && create && (t = calloc(1, sizeof(*t))) && pthread_setspecific(table_key, t) != 0) {
		free(t);
		t = NULL;
	}
	return t; /* NULL on OOM: tokens are verified without caching */
}

static struct cached *set_of(struct table *t, const unsigned char hash[32])
{
	return t->sets[(hash[0] | (unsigned)hash[1] << 8) % CACHE_SETS];
}

bool jwt_cache_get(const unsigned char hash[32], uint64_t epoch, uint64_t gen, int64_t now_ms, struct identity *out)
{
	struct table *t = table(false);
	if (!t)
		return false;
	struct cached *set = set_of(t, hash);
	for (int w = 0; w < CACHE_WAYS; w++) {
		struct cached *e = &set[w];
		if (e->until_ms && CRYPTO_memcmp(e->hash, hash, 32) == 0) {
			if (e->epoch != epoch || e->gen != gen || now_ms >= e->until_ms)
				return false;
			e->used = ++t->tick;
			*out = e->ident;
			return true;
		}
	}
	return false;
}

void jwt_cache_put(const unsigned char hash[32], uint64_t epoch, uint64_t gen, int64_t until_ms,
		   const struct identity *ident)
{
	struct table *t = table(true);
	if (!t)
		return;
	struct cached *set = set_of(t, hash), *victim = &set[0];
	for (int w = 0; w < CACHE_WAYS; w++) {
		if (set[w].until_ms && CRYPTO_memcmp(set[w].hash, hash, 32) == 0) {
			victim = &set[w]; /* the same token, verified again */
			break;
		}
		if (set[w].used < victim->used)
			victim = &set[w]; /* empty entries have used == 0 */
	}
	memcpy(victim->hash, hash, 32);
	victim->until_ms = until_ms;
	victim->gen = gen;
	victim->epoch = epoch;
	victim->used = ++t->tick;
	victim->ident = *ident;
}

void jwt_cache_release(void)
{
	struct table *t = table(false);
	free(t);
	pthread_setspecific(table_key, NULL);
}
