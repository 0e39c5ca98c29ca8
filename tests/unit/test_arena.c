/*
 * test_arena.c - the request arena (src/core/arena.c): alignment, the hard limit, oversized
 * allocations, reset, and the string helpers.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"

static struct arena a;

static void teardown(void)
{
	arena_deinit(&a);
}

TestSuite(arena, .fini = teardown);

Test(arena, allocations_are_16_byte_aligned_and_distinct)
{
	static const size_t sizes[] = {1, 3, 15, 16, 17, 31, 33, 100, 7, 0, 250};
	unsigned char *prev = NULL;
	arena_init(&a, 256, 1 << 20);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		unsigned char *p = arena_alloc(&a, sizes[i]);
		cr_assert_not_null(p, "allocation %zu of %zu bytes failed", i, sizes[i]);
		cr_assert_eq((uintptr_t)p % 16, 0, "allocation of %zu bytes is not 16-aligned", sizes[i]);
		memset(p, (int)i, sizes[i]); /* ASan flags a block shorter than asked */
		if (prev && sizes[i])
			cr_assert_neq(p, prev, "two live allocations share an address");
		if (sizes[i])
			prev = p;
	}
}

Test(arena, earlier_allocations_are_not_overwritten)
{
	arena_init(&a, 64, 1 << 20);
	char *s[20];
	for (int i = 0; i < 20; i++) {
		s[i] = arena_printf(&a, "value-%d", i);
		cr_assert_not_null(s[i]);
	}
	for (int i = 0; i < 20; i++) {
		char want[32];
		snprintf(want, sizeof(want), "value-%d", i);
		cr_assert_str_eq(s[i], want);
	}
}

Test(arena, limit_is_enforced_with_null)
{
	arena_init(&a, 256, 1024);
	for (int i = 0; i < 8; i++)
		cr_assert_not_null(arena_alloc(&a, 128), "allocation %d within the limit failed", i);
	cr_assert_eq(a.used_total, 1024);
	cr_assert_null(arena_alloc(&a, 1), "allocation past the limit must fail");
	cr_assert_eq(a.used_total, 1024, "a failed allocation must not count");
}

Test(arena, limit_counts_rounded_sizes)
{
	arena_init(&a, 256, 32);
	cr_assert_not_null(arena_alloc(&a, 1)); /* takes 16 */
	cr_assert_not_null(arena_alloc(&a, 1)); /* takes 16 */
	cr_assert_null(arena_alloc(&a, 1));
}

Test(arena, single_allocation_larger_than_limit_fails)
{
	arena_init(&a, 256, 4096);
	cr_assert_null(arena_alloc(&a, 4097));
	cr_assert_null(arena_alloc(&a, SIZE_MAX));
	cr_assert_not_null(arena_alloc(&a, 16), "a failed allocation must leave the arena usable");
}

Test(arena, huge_size_after_small_allocation_fails)
{
	/* used_total + rounded must not wrap around and slip under the limit */
	arena_init(&a, 256, 1 << 20);
	cr_assert_not_null(arena_alloc(&a, 10));
	cr_assert_null(arena_alloc(&a, SIZE_MAX - 20));
	cr_assert_eq(a.used_total, 16);
}

Test(arena, oversized_allocation_gets_its_own_chunk)
{
	arena_init(&a, 64, 1 << 20);
	char *small1 = arena_strndup(&a, "abc", 3);
	unsigned char *big = arena_alloc(&a, 5000);
	cr_assert_not_null(big);
	cr_assert_eq((uintptr_t)big % 16, 0);
	memset(big, 0xab, 5000); /* the whole block must be usable */
	char *small2 = arena_strndup(&a, "def", 3);
	cr_assert_not_null(small2);
	cr_assert_str_eq(small1, "abc");
	cr_assert_str_eq(small2, "def");
	cr_assert_eq(big[4999], 0xab);
	cr_assert_eq(a.used_total, 16 + 5008 + 16);
}

Test(arena, oversized_first_allocation)
{
	arena_init(&a, 64, 1 << 20);
	unsigned char *big = arena_alloc(&a, 1000);
	cr_assert_not_null(big);
	memset(big, 1, 1000);
	cr_assert_not_null(arena_alloc(&a, 8));
}

Test(arena, reset_keeps_working_and_restarts_the_limit)
{
	arena_init(&a, 128, 512);
	for (int round = 0; round < 5; round++) {
		size_t got = 0;
		while (arena_alloc(&a, 64))
			got++;
		cr_assert_eq(got, 8, "round %d: expected 8 allocations of 64 in 512 bytes, got %zu", round, got);
		cr_assert_null(arena_alloc(&a, 16), "the limit holds until reset");
		arena_reset(&a);
		cr_assert_eq(a.used_total, 0);
		cr_assert_not_null(a.head, "reset keeps one chunk for reuse");
	}
	char *s = arena_printf(&a, "after %s", "reset");
	cr_assert_str_eq(s, "after reset");
}

Test(arena, reset_after_oversized_allocations)
{
	arena_init(&a, 64, 1 << 20);
	cr_assert_not_null(arena_alloc(&a, 10));
	cr_assert_not_null(arena_alloc(&a, 4000));
	cr_assert_not_null(arena_alloc(&a, 9000));
	arena_reset(&a);
	cr_assert_eq(a.used_total, 0);
	unsigned char *p = arena_alloc(&a, 48);
	cr_assert_not_null(p);
	memset(p, 2, 48);
}

Test(arena, reset_and_deinit_of_unused_arena)
{
	arena_init(&a, 64, 1024);
	arena_reset(&a);
	arena_deinit(&a);
	arena_deinit(&a); /* twice is harmless */
	arena_deinit(NULL);
	cr_assert_null(a.head);
}

Test(arena, strndup_copies_exactly_len_bytes)
{
	arena_init(&a, 64, 1024);
	char *s = arena_strndup(&a, "hello, world", 5);
	cr_assert_str_eq(s, "hello");
	char *e = arena_strndup(&a, "ignored", 0);
	cr_assert_str_eq(e, "");
	const char with_nul[] = {'a', '\0', 'b'};
	char *n = arena_strndup(&a, with_nul, 3);
	cr_assert_eq(memcmp(n, with_nul, 3), 0, "embedded NUL bytes are copied too");
	cr_assert_eq(n[3], '\0');
}

Test(arena, strndup_past_limit_is_null)
{
	arena_init(&a, 64, 32);
	cr_assert_null(arena_strndup(&a, "0123456789012345678901234567890123456789", 40));
}

Test(arena, printf_formats_and_respects_limit)
{
	arena_init(&a, 32, 256);
	char *s = arena_printf(&a, "%s=%d;%c", "key", 42, 'x');
	cr_assert_str_eq(s, "key=42;x");
	char *longer = arena_printf(&a, "%0100d", 7);
	cr_assert_not_null(longer, "output longer than a chunk is still served");
	cr_assert_eq(strlen(longer), 100);
	cr_assert_eq(longer[99], '7');
	cr_assert_null(arena_printf(&a, "%0300d", 1), "output past the limit is NULL");
	char *empty = arena_printf(&a, "%s", "");
	cr_assert_str_eq(empty, "");
}
