/*
 * test_bus_cursor.c - the cursors of the live event bus (src/bus/api.c): parsing what a client
 * sends back (Last-Event-ID, ?after=), formatting, and their order.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"

static void assert_cursor(struct bus_cursor c, int64_t seq, int64_t minor)
{
	cr_assert(c.seq == seq && c.minor == minor, "cursor %lld.%lld, expected %lld.%lld", (long long)c.seq,
		  (long long)c.minor, (long long)seq, (long long)minor);
}

static struct bus_cursor parse_ok(const char *s)
{
	struct bus_cursor c = {-7, -7};
	cr_assert(bus_cursor_parse(s, strlen(s), &c), "\"%s\" rejected", s);
	return c;
}

Test(bus_cursor, round_trip)
{
	static const char *const texts[] = {"0", "12", "12.3", "1.1", "999999999999999", "5.999999999999999"};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct bus_cursor c = parse_ok(texts[i]);
		char out[48];
		bus_cursor_format(c, out, sizeof(out));
		cr_assert_str_eq(out, texts[i]);
		struct bus_cursor back = parse_ok(out);
		cr_assert_eq(bus_cursor_cmp(c, back), 0);
	}
	assert_cursor(parse_ok("12.3"), 12, 3);
	assert_cursor(parse_ok("12"), 12, 0);
	char out[48];
	bus_cursor_format((struct bus_cursor){7, 0}, out, sizeof(out));
	cr_assert_str_eq(out, "7");
	bus_cursor_format((struct bus_cursor){7, 2}, out, sizeof(out));
	cr_assert_str_eq(out, "7.2");
}

Test(bus_cursor, parse_uses_len_not_nul)
{
	struct bus_cursor c;
	cr_assert(bus_cursor_parse("12.3xyz", 4, &c));
	assert_cursor(c, 12, 3);
	cr_assert(bus_cursor_parse("45", 1, &c));
	assert_cursor(c, 4, 0);
	cr_assert_not(bus_cursor_parse("12", 0, &c));
}

Test(bus_cursor, parse_rejects)
{
	/* '|'-separated, starting with the empty cursor; the last three are too long (15 digits is
	 * the bound of each part) */
	const char *bad = "|.|1.|.1|a|1a|1.2.3|-1|1.-2| 1|1 |1..2|+1|0x1|1,2|1234567890123456|1.1234567890123456|"
			  "99999999999999999999999";
	for (const char *p = bad, *end;; p = end + 1) {
		end = strchr(p, '|');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		struct bus_cursor c = {-7, -7};
		cr_assert_not(bus_cursor_parse(p, len, &c), "\"%.*s\" accepted", (int)len, p);
		cr_assert_eq(c.seq, -7, "\"%.*s\" wrote the output although rejected", (int)len, p);
		if (!end)
			break;
	}
}

Test(bus_cursor, cmp_orders_seq_then_minor)
{
	struct bus_cursor order[] = {{0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 10}, {2, 0}, {10, 0}, {10, 3}};
	size_t n = sizeof(order) / sizeof(order[0]);
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < n; j++) {
			int want = i < j ? -1 : i > j ? 1 : 0;
			int got = bus_cursor_cmp(order[i], order[j]);
			cr_assert_eq(got, want, "cmp(%zu, %zu) = %d", i, j, got);
		}
	}
}
