/*
 * cache.c - OPA decisions remembered for policy.cache_ttl_ms, keyed by the exact input.
 *
 * DESIGN: a fixed array of slots (never grows: a full cache evicts, it does not allocate more),
 * direct-mapped by a 64-bit FNV-1a hash of the input JSON; the key text is kept and compared so a
 * hash collision can never hand one input another's decision. Slots are guarded by 16 mutexes
 * (slot i by lock i % 16), so io threads reading and policy threads writing rarely meet. Allows
 * and denies are both cached, as the original did; fail-closed denies (OPA down, timeout) are
 * not, so a recovered OPA is asked again at once (policy.c decides what goes in).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_int.h"

#define LOCKS 16

struct slot {
	char *key;		  /* input JSON; owned; NULL when empty */
	uint64_t hash;		  /* of key */
	int64_t expires_ms;	  /* wall-clock ms after which the entry is stale */
	struct policy_decision d; /* the cached decision */
};

struct policy_cache {
	struct slot *slots;	      /* nslots entries */
	size_t nslots;		      /* fixed */
	int64_t ttl_ms;		      /* lifetime of an entry */
	pthread_mutex_t locks[LOCKS]; /* slot i: locks[i % LOCKS] */
};

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

struct policy_cache *policy_cache_new(size_t slots, int64_t ttl_ms)
{
	if (ttl_ms <= 0 || slots == 0)
		return NULL;
	struct policy_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->slots = calloc(slots, sizeof(*c->slots));
	if (!c->slots) {
		free(c);
		return NULL;
	}
	c->nslots = slots;
	c->ttl_ms = ttl_ms;
	for (int i = 0; i < LOCKS; i++)
		pthread_mutex_init(&c->locks[i], NULL);
	return c;
}

void policy_cache_free(struct policy_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nslots; i++)
		free(c->slots[i].key);
	for (int i = 0; i < LOCKS; i++)
		pthread_mutex_destroy(&c->locks[i]);
	free(c->slots);
	free(c);
}

bool policy_cache_get(struct policy_cache *c, const char *key, int64_t now_ms, struct policy_decision *out)
{
	if (!c)
		return false;
	uint64_t h = fnv1a(key);
	size_t i = (size_t)(h % c->nslots);
	struct slot *s = &c->slots[i];
	pthread_mutex_lock(&c->locks[i % LOCKS]);
	bool hit = s->key && s->hash == h && now_ms < s->expires_ms && strcmp(s->key, key) == 0;
	if (hit)
		*out = s->d;
	pthread_mutex_unlock(&c->locks[i % LOCKS]);
	return hit;
}

void policy_cache_put(struct policy_cache *c, const char *key, int64_t now_ms, const struct policy_decision *d)
{
	if (!c)
		return;
	char *copy = strdup(key);
	if (!copy)
		return; /* not cached: the next identical input asks again */
	uint64_t h = fnv1a(key);
	size_t i = (size_t)(h % c->nslots);
	struct slot *s = &c->slots[i];
	pthread_mutex_lock(&c->locks[i % LOCKS]);
	char *old = s->key;
	s->key = copy;
	s->hash = h;
	s->expires_ms = now_ms + c->ttl_ms;
	s->d = *d;
	pthread_mutex_unlock(&c->locks[i % LOCKS]);
	free(old);
}
