/*
 * sqlite_mem.c - SQLite's memory allocator: per-thread caches of freed blocks in front of malloc.
 *
 * DESIGN: Debian's SQLite is built without lookaside memory (SQLITE_OMIT_LOOKASIDE), so every
 * allocation a statement makes while it runs goes to malloc. During ingest the writer thread
 * spent about a fifth of its time in glibc's malloc and free (perf, bench/chat_ingest.sh), mostly
 * in its slow paths: the b-tree's page balancing takes a scratch buffer of several KiB, beyond
 * glibc's per-thread cache, on every page split, and a statement allocates runs of same-sized
 * objects longer than that cache's 7 per size.
 * Here a request is rounded up to a size class (16-byte steps to 64 B, then four classes per
 * power of two, up to MEM_CACHED_MAX) and the block carries a 16-byte header naming its class.
 * A freed block goes onto the freeing thread's list for its class (at most MEM_CLASS_BYTES of
 * blocks per class and thread; beyond that, to free), and an allocation of that class takes the
 * list's first block before it asks malloc. Larger requests go straight to malloc. A thread's
 * lists are returned to malloc when it exits (a pthread key's destructor); a block freed after
 * that goes straight to free. A block may be freed by another thread than the one that took it:
 * it then joins the freeing thread's list. SQLite gets these methods through
 * sqlite3_config(SQLITE_CONFIG_MALLOC) before it initialises (sqlite.c), or keeps its own.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

#define MEM_HEADER	16	     /* keeps the 16-byte alignment malloc gives */
#define MEM_CACHED_MAX	(64 * 1024)  /* larger requests are not cached */
#define MEM_CLASSES	44	     /* classes of 16..64 B, then 4 per power of two to 64 KiB */
#define MEM_CLASS_BYTES (128 * 1024) /* most bytes kept per class and thread */
#define MEM_LARGE	UINT32_MAX   /* header class of an uncached block */

struct mem_header {
	uint32_t cls;  /* size class, or MEM_LARGE */
	uint32_t size; /* usable bytes after the header */
	uint64_t pad;  /* (to MEM_HEADER bytes) */
};

struct mem_free {
	struct mem_free *next; /* next free block of the class */
};

struct mem_cache {
	struct mem_free *head[MEM_CLASSES]; /* free blocks by class */
	uint32_t count[MEM_CLASSES];	    /* blocks in head[] */
	bool registered;		    /* the key's destructor will empty it */
	bool closed;			    /* the thread is exiting: cache nothing */
};

static _Thread_local struct mem_cache cache;
static pthread_key_t cache_key;
static bool key_ok;
static _Atomic uint64_t returned; /* blocks exiting threads gave back to malloc (tests) */

/* Class of a request of n bytes (1..MEM_CACHED_MAX) and its usable size in *cap. */
static uint32_t size_class(size_t n, size_t *cap)
{
	if (n <= 64) {
		size_t steps = n ? (n + 15) / 16 : 1;
		*cap = steps * 16;
		return (uint32_t)steps - 1;
	}
	unsigned lg = 63u - (unsigned)__builtin_clzll((unsigned long long)(n - 1)); /* 2^lg < n <= 2^(lg+1) */
	size_t step = (size_t)1 << (lg - 2), k = (n - 1 - ((size_t)1 << lg)) / step;
	*cap = ((size_t)1 << lg) + (k + 1) * step;
	return 4 + (lg - 6) * 4 + (uint32_t)k;
}

static void cache_empty(void *arg)
{
	struct mem_cache *c = arg;
	uint64_t n = 0;
	c->closed = true;
	for (int i = 0; i < MEM_CLASSES; i++) {
		while (c->head[i]) {
			struct mem_free *f = c->head[i];
			c->head[i] = f->next;
			free((char *)f - MEM_HEADER);
			n++;
		}
		c->count[i] = 0;
	}
	atomic_fetch_add_explicit(&returned, n, memory_order_relaxed);
}

static void *mem_malloc(int n)
{
	if (n <= 0)
		return NULL;
	size_t cap = 0;
	uint32_t cls = MEM_LARGE;
	if ((size_t)n <= MEM_CACHED_MAX) {
		cls = size_class((size_t)n, &cap);
		struct mem_free *f = cache.head[cls];
		if (f) {
			cache.head[cls] = f->next;
			cache.count[cls]--;
			return f;
		}
	} else {
		cap = ((size_t)n + 7) & ~(size_t)7;
	}
	struct mem_header *h = malloc(MEM_HEADER + cap);
	if (!h)
		return NULL;
	h->cls = cls;
	h->size = (uint32_t)cap;
	return (char *)h + MEM_HEADER;
}

static void mem_free(void *p)
{
	if (!p)
		return;
	struct mem_header *h = (struct mem_header *)((char *)p - MEM_HEADER);
	uint32_t cls = h->cls;
	if (cls == MEM_LARGE || cache.closed || (uint64_t)(cache.count[cls] + 1) * h->size > MEM_CLASS_BYTES) {
		free(h);
		return;
	}
	if (!cache.registered) { /* first block this thread keeps: empty the lists when it exits */
		if (!key_ok || pthread_setspecific(cache_key, &cache) != 0) {
			free(h);
			return;
		}
		cache.registered = true;
	}
	struct mem_free *f = p;
	f->next = cache.head[cls];
	cache.head[cls] = f;
	cache.count[cls]++;
}

static int mem_size(void *p)
{
	return p ? (int)((struct mem_header *)((char *)p - MEM_HEADER))->size : 0;
}

static void *mem_realloc(void *p, int n)
{
	if (!p)
		return mem_malloc(n);
	int have = mem_size(p);
	if (n <= have && n > have / 2)
		return p; /* fits, and not so much smaller that its class would waste half */
	void *q = mem_malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, (size_t)(n < have ? n : have));
	mem_free(p);
	return q;
}

static int mem_roundup(int n)
{
	size_t cap = ((size_t)(n > 0 ? n : 1) + 7) & ~(size_t)7;
	if (n > 0 && (size_t)n <= MEM_CACHED_MAX)
		(void)size_class((size_t)n, &cap);
	return (int)cap;
}

static int mem_init(void *arg)
{
	(void)arg;
	key_ok = pthread_key_create(&cache_key, cache_empty) == 0;
	return SQLITE_OK;
}

static void mem_shutdown(void *arg)
{
	(void)arg;
}

static const sqlite3_mem_methods mem_methods = {
	.xMalloc = mem_malloc,
	.xFree = mem_free,
	.xRealloc = mem_realloc,
	.xSize = mem_size,
	.xRoundup = mem_roundup,
	.xInit = mem_init,
	.xShutdown = mem_shutdown,
};

int store_sqlite_mem_install(void)
{
	return sqlite3_config(SQLITE_CONFIG_MALLOC, &mem_methods);
}

uint64_t store_sqlite_mem_kept_here(void)
{
	uint64_t n = 0;
	for (int i = 0; i < MEM_CLASSES; i++)
		n += cache.count[i];
	return n;
}

uint64_t store_sqlite_mem_returned(void)
{
	return atomic_load_explicit(&returned, memory_order_relaxed);
}
