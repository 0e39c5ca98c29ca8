/*
 * test_conv_coalesce.c - a long reply's deltas merged (src/tasks/conversation_delta.c): the
 * schedule (one delta per chunk, then one per interval), the bound of the held text, and a reply of
 * 6,000 chunks published through the local bus: its deltas fit the resume log, their stream_index
 * runs 0..n-1 and their text joined is the reply's, the first CONV_DELTA_EACH one chunk each.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "tasks/conversation_int.h"

#define MS 1000000u /* ns */

Test(conv_coalesce, the_interval_grows_with_the_deltas_published)
{
	cr_assert_eq(conv_delta_interval_ms(0), 0);
	cr_assert_eq(conv_delta_interval_ms(CONV_DELTA_EACH - 1), 0);
	cr_assert_eq(conv_delta_interval_ms(CONV_DELTA_EACH), CONV_DELTA_FAST_MS);
	cr_assert_eq(conv_delta_interval_ms(CONV_DELTA_SLOW - 1), CONV_DELTA_FAST_MS);
	cr_assert_eq(conv_delta_interval_ms(CONV_DELTA_SLOW), CONV_DELTA_SLOW_MS);
	/* what the schedule promises: the first deltas and those of 200 s fast leave a quarter of the log */
	cr_assert_leq(CONV_DELTA_SLOW + 1, BUS_LOG_MAX - 1000);
}

Test(conv_coalesce, held_text_is_due_after_the_interval)
{
	struct conv_held h = {0};
	uint64_t t0 = 5000 * MS;
	h.last_ns = t0;
	cr_assert_not(conv_held_due(&h, CONV_DELTA_EACH, t0 + 500 * MS), "nothing held: nothing due");
	cr_assert(conv_held_add(&h, "ab", 2));
	cr_assert(conv_held_add(&h, "c", 1));
	cr_assert_eq(h.len, 3);
	cr_assert_eq(memcmp(h.text, "abc", 3), 0);
	cr_assert_not(conv_held_due(&h, CONV_DELTA_EACH, t0 + 99 * MS));
	cr_assert(conv_held_due(&h, CONV_DELTA_EACH, t0 + 100 * MS));
	cr_assert_not(conv_held_due(&h, CONV_DELTA_SLOW, t0 + 999 * MS));
	cr_assert(conv_held_due(&h, CONV_DELTA_SLOW, t0 + 1000 * MS));
	cr_assert(conv_held_due(&h, 0, t0), "before CONV_DELTA_EACH held text is due at once");
	conv_held_free(&h);
	conv_held_free(&h); /* twice is fine */
	cr_assert_null(h.text);
}

Test(conv_coalesce, held_text_is_bounded)
{
	struct conv_held h = {0};
	char *big = malloc(CONV_DELTA_BYTES + 1);
	cr_assert_not_null(big);
	memset(big, 'x', CONV_DELTA_BYTES + 1);
	cr_assert_not(conv_held_add(&h, big, CONV_DELTA_BYTES + 1), "more than the bound at once");
	cr_assert_eq(h.len, 0);
	cr_assert(conv_held_add(&h, big, CONV_DELTA_BYTES - 1));
	cr_assert_not(conv_held_add(&h, "yz", 2), "past the bound");
	cr_assert(conv_held_add(&h, "y", 1));
	cr_assert_eq(h.len, CONV_DELTA_BYTES);
	conv_held_free(&h);
	free(big);
}

/* The deltas the bus holds for key, in order, checked against the reply's chunks (chunk i is
 * "w%05d "): stream_index 0..n-1, the first CONV_DELTA_EACH one chunk each, the text whole. */
static void check_log(const char *key, int chunks, int64_t published)
{
	struct bus_msg **msgs = NULL;
	size_t n = 0;
	int64_t seq = 0;
	cr_assert_eq(bus_snapshot(key, (struct bus_cursor){0, 0}, &msgs, &n, &seq), SOMA_OK);
	cr_assert_eq((int64_t)n, published, "the log holds %zu deltas of %lld", n, (long long)published);
	cr_assert_lt(n, BUS_LOG_MAX);
	size_t want_len = (size_t)chunks * 7, at = 0;
	char *want = malloc(want_len + 1), *got = malloc(want_len + 1);
	cr_assert(want && got);
	for (int i = 0; i < chunks; i++) {
		char chunk[16];
		snprintf(chunk, sizeof(chunk), "w%05d ", i);
		memcpy(want + (size_t)i * 7, chunk, 7);
	}
	for (size_t i = 0; i < n; i++) {
		json_t *ev = json_loadb(msgs[i]->text, msgs[i]->len, 0, NULL);
		cr_assert_not_null(ev);
		json_int_t index = json_integer_value(json_object_get(json_object_get(ev, "metadata"), "stream_index"));
		cr_assert_eq(index, (json_int_t)i, "delta %zu has stream_index %lld", i, (long long)index);
		const char *m = json_string_value(json_object_get(ev, "message"));
		size_t len = json_string_length(json_object_get(ev, "message"));
		if (i < CONV_DELTA_EACH)
			cr_assert_eq(len, 7, "delta %zu: one chunk each before CONV_DELTA_EACH", i);
		cr_assert_leq(at + len, want_len);
		memcpy(got + at, m, len);
		at += len;
		json_decref(ev);
		bus_msg_release(msgs[i]);
	}
	free(msgs);
	cr_assert_eq(at, want_len, "the deltas give %zu bytes of %zu", at, want_len);
	cr_assert_eq(memcmp(got, want, want_len), 0, "the deltas' text is not the reply's");
	free(want);
	free(got);
}

Test(conv_coalesce, a_long_reply_fits_the_resume_log_whole)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct task_ctx t = {.id = "gen-1", .tenant = "t", .session_id = "s-1"};
	struct generation g = {.task = &t};
	bus_key(g.bus_key, t.tenant, t.session_id);
	bus_generation_begin(g.bus_key);
	enum { CHUNKS = 6000 };
	for (int i = 0; i < CHUNKS; i++) {
		char chunk[16];
		snprintf(chunk, sizeof(chunk), "w%05d ", i);
		conv_delta_add(&g, chunk, 7);
	}
	cr_assert_geq(g.stream_index, CONV_DELTA_EACH);
	cr_assert_lt(g.stream_index, CONV_DELTA_EACH + 10, "6,000 chunks at once made %lld deltas",
		     (long long)g.stream_index);
	conv_delta_flush(&g); /* as the reply ends */
	cr_assert_eq(g.held.len, 0);
	conv_delta_flush(&g); /* nothing held: nothing published */
	check_log(g.bus_key, CHUNKS, g.stream_index);
	conv_held_free(&g.held);
	bus_generation_end(g.bus_key);
	bus_deinit();
}

Test(conv_coalesce, a_short_reply_is_one_delta_per_chunk)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct task_ctx t = {.id = "gen-2", .tenant = "t", .session_id = "s-2"};
	struct generation g = {.task = &t};
	bus_key(g.bus_key, t.tenant, t.session_id);
	bus_generation_begin(g.bus_key);
	for (int i = 0; i < 300; i++) {
		char chunk[16];
		snprintf(chunk, sizeof(chunk), "w%05d ", i);
		conv_delta_add(&g, chunk, 7);
		cr_assert_eq(g.held.len, 0, "nothing is held in a short reply");
	}
	cr_assert_null(g.held.text, "no buffer for a short reply");
	cr_assert_eq(g.stream_index, 300);
	check_log(g.bus_key, 300, 300);
	bus_generation_end(g.bus_key);
	bus_deinit();
}
