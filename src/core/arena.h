/*
 * arena.h - bump allocator for one request (or any other short-lived unit of work).
 *
 * DESIGN: memory is carved from chunks; nothing is freed individually; arena_reset() keeps the
 * first chunk for reuse on the next request of the same connection, arena_deinit() releases all.
 * Every arena has a hard cap (limit): an allocation beyond it fails with NULL instead of growing
 * without bound. Not thread-safe: an arena belongs to the thread that uses it.
 */
#ifndef SOMA_CORE_ARENA_H
#define SOMA_CORE_ARENA_H

#include <stddef.h>

#include "core/str.h"

struct arena_chunk;

struct arena {
	struct arena_chunk *head; /* newest chunk; allocations come from here */
	size_t chunk_size;	  /* size of a regular chunk */
	size_t used_total;	  /* bytes handed out since the last reset */
	size_t limit;		  /* hard cap on used_total */
};

/* Prepares an empty arena; no memory is taken until the first allocation. */
void arena_init(struct arena *a, size_t chunk_size, size_t limit);
/* Releases every chunk. Accepts an arena that was never used. */
void arena_deinit(struct arena *a);
/* Forgets every allocation; keeps one regular-sized chunk for reuse and frees the rest. */
void arena_reset(struct arena *a);
/* Returns size bytes aligned to 16, owned by the arena, or NULL past the limit or on OOM. */
void *arena_alloc(struct arena *a, size_t size);
/* Copies s into the arena with a terminating NUL. NULL on failure. */
char *arena_strndup(struct arena *a, const char *s, size_t len);
/* Formats into the arena (printf-style). NULL on failure. */
char *arena_printf(struct arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
