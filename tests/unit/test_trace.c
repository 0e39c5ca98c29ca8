/*
 * test_trace.c - W3C traceparent parsing and formatting (src/core/trace.c, interop.md 6.2), span
 * ids, and spans when tracing is off (nothing is recorded) and on (parent links, attributes).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "core/trace.h"

static const char *const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static bool parse(const char *s, struct trace_ctx *c)
{
	return trace_parse(s, strlen(s), c);
}

Test(trace, parses_a_valid_header_and_formats_it_back)
{
	struct trace_ctx c;
	cr_assert(parse(good, &c));
	cr_assert(c.valid);
	cr_assert_eq(c.trace_id[0], 0x4b);
	cr_assert_eq(c.trace_id[15], 0x36);
	cr_assert_eq(c.span_id[0], 0x00);
	cr_assert_eq(c.span_id[7], 0xb7);
	cr_assert_eq(c.flags, 1);
	char out[TRACEPARENT_LEN + 1];
	trace_format(c.trace_id, c.span_id, c.flags, out);
	cr_assert_str_eq(out, good);
}

Test(trace, refuses_invalid_headers)
{
	static const char *const bad[] = {
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  /* uppercase hex */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00F067aa0ba902b7-01",  /* one uppercase digit */
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* all-zero trace id */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* all-zero parent id */
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
		"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",   /* short trace id */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",   /* short span id */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",   /* short flags */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* version 00 with more */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010", /* too long */
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* wrong separator */
		"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* not hex */
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* higher version, no '-' */
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct trace_ctx c;
		c.valid = true;
		cr_assert_not(parse(bad[i], &c), "accepted %s", bad[i]);
		cr_assert_not(c.valid, "left valid after %s", bad[i]);
	}
	struct trace_ctx c;
	cr_assert_not(trace_parse(NULL, 0, &c));
}

Test(trace, reads_higher_versions_and_masks_flags)
{
	struct trace_ctx c;
	cr_assert(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &c));
	cr_assert_eq(c.flags, 1, "only the sampled bit is kept");
	cr_assert(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-follows", &c));
	cr_assert_eq(c.flags, 0);
	cr_assert(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02", &c));
	cr_assert_eq(c.flags, 0);
}

Test(trace, random_ids_are_never_zero_and_differ)
{
	uint8_t a[16], b[16];
	trace_random_id(a, 16);
	trace_random_id(b, 16);
	cr_assert(memcmp(a, b, 16) != 0);
	uint8_t zero[16] = {0};
	for (int i = 0; i < 1000; i++) {
		trace_random_id(a, 8);
		cr_assert(memcmp(a, zero, 8) != 0);
	}
}

Test(trace, nothing_is_recorded_when_off)
{
	trace_set_enabled(false);
	struct trace_span s;
	memset(&s, 0x5a, sizeof(s));
	cr_assert_not(trace_span_start(&s, NULL, "GET /x", TRACE_KIND_SERVER));
	cr_assert_not(s.on);
	trace_span_attr_int(&s, "k", 1); /* no-ops on a span that is not on */
	trace_span_end(&s);
	cr_assert_eq(s.name[0], 0x5a, "nothing else was written");
}

Test(trace, children_share_the_trace_and_point_at_their_parent)
{
	trace_set_enabled(true);
	struct trace_ctx remote;
	cr_assert(parse(good, &remote));
	struct trace_span server, child, root;
	cr_assert(trace_span_start(&server, &remote, "POST /v1/session/message", TRACE_KIND_SERVER));
	cr_assert(server.has_parent);
	cr_assert_eq(memcmp(server.trace_id, remote.trace_id, 16), 0);
	cr_assert_eq(memcmp(server.parent_id, remote.span_id, 8), 0);
	cr_assert_neq(memcmp(server.span_id, remote.span_id, 8), 0);
	char tp[TRACEPARENT_LEN + 1];
	trace_span_traceparent(&server, tp);
	struct trace_ctx back;
	cr_assert(parse(tp, &back), "%s", tp);
	cr_assert_eq(memcmp(back.span_id, server.span_id, 8), 0);

	trace_current_set(&server);
	cr_assert(trace_span_start_child(&child, "chat", TRACE_KIND_CLIENT));
	cr_assert_eq(memcmp(child.trace_id, server.trace_id, 16), 0);
	cr_assert_eq(memcmp(child.parent_id, server.span_id, 8), 0);
	trace_current_set(NULL);
	cr_assert(trace_span_start_child(&root, "alone", TRACE_KIND_INTERNAL));
	cr_assert_not(root.has_parent);
	cr_assert_neq(memcmp(root.trace_id, server.trace_id, 16), 0);

	for (int i = 0; i < TRACE_MAX_ATTRS + 3; i++)
		trace_span_attr_int(&root, "n", i);
	cr_assert_eq(root.nattrs, TRACE_MAX_ATTRS, "attributes past the cap are dropped");
	char longname[300];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	trace_span_attr_str(&child, "long", longname);
	cr_assert_eq(strlen(child.attrs[0].str), TRACE_ATTR_LEN - 1);
	trace_span_end(&child); /* no exporter runs: the copy goes nowhere */
	cr_assert_not(child.on);
	cr_assert(child.end_ns >= child.start_ns);
	trace_set_enabled(false);
}
