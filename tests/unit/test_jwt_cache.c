/*
 * test_jwt_cache.c - the per-thread cache of verified JWTs (src/identity/jwt_cache.c): hits,
 * what makes an entry untrusted (epoch, key generation, time), and least-recently-used
 * replacement within a set.
 *
 * DESIGN: hashes are made by hand so that several fall into one set (the set is chosen by the
 * first two bytes of the hash); the cache is driven directly through its internal API.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "identity/jwt_int.h"

static void teardown(void)
{
	jwt_cache_release();
}

TestSuite(jwt_cache, .fini = teardown);

/* A hash in set 7 whose last byte tells it apart. */
static void hash_of(int n, unsigned char h[32])
{
	memset(h, 0, 32);
	h[0] = 7;
	h[31] = (unsigned char)n;
}

static void put(int n, int64_t until)
{
	unsigned char h[32];
	struct identity id = {0};
	hash_of(n, h);
	snprintf(id.tenant, sizeof(id.tenant), "t%d", n);
	jwt_cache_put(h, 1, 1, until, &id);
}

static bool get(int n, uint64_t epoch, uint64_t gen, int64_t now)
{
	unsigned char h[32];
	struct identity id;
	hash_of(n, h);
	if (!jwt_cache_get(h, epoch, gen, now, &id))
		return false;
	char want[16];
	snprintf(want, sizeof(want), "t%d", n);
	cr_assert_str_eq(id.tenant, want);
	return true;
}

Test(jwt_cache, hit_and_what_untrusts_an_entry)
{
	cr_assert_not(get(1, 1, 1, 100), "empty");
	put(1, 1000);
	cr_assert(get(1, 1, 1, 999));
	cr_assert_not(get(1, 1, 1, 1000), "until_ms reached");
	cr_assert_not(get(1, 2, 1, 100), "another configuration");
	cr_assert_not(get(1, 1, 2, 100), "another key set");
	put(1, 5000); /* verified again: the same entry is refreshed */
	cr_assert(get(1, 1, 1, 4000));
}

Test(jwt_cache, least_recently_used_goes)
{
	for (int n = 1; n <= 4; n++)
		put(n, 1000);
	cr_assert(get(1, 1, 1, 10)); /* 1 is now the most recent; 2 the least */
	put(5, 1000);
	cr_assert_not(get(2, 1, 1, 10), "the least recently used entry was replaced");
	for (int n = 1; n <= 5; n++)
		if (n != 2)
			cr_assert(get(n, 1, 1, 10), "entry %d", n);
}

Test(jwt_cache, release_forgets)
{
	put(1, 1000);
	jwt_cache_release();
	cr_assert_not(get(1, 1, 1, 10));
	jwt_cache_release(); /* twice is fine */
}
