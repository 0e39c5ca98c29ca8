/*
 * test_relay_handed.c - the redis relay's handed rows (src/queue/relay.c): the tasks a
 * PostgreSQL message lane committed already claimed for this node's relay and handed over in
 * memory. Once the relay stopped it holds none of them: what it could not publish waits in the
 * outbox for its lease, and the memory of every row handed is given back.
 *
 * DESIGN: Redis is a closed loopback port (publishing fails at once, as in an outage); rows are
 * handed through the store's hook as a lane hands them (store_int.h: task_relay). The test keeps
 * its own reference to the last row handed and reads its reference count after the stop.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "helpers.h"
#include "queue/queue.h"
#include "store/store.h"
#include "store/store_int.h"

static char dir[64];
static struct store *st;

static void setup(void)
{
	static char *const no_env[] = {NULL};
	const char *sets[] = {"redis.url=redis://127.0.0.1:1/0"}; /* nothing listens: Redis is down */
	struct cfg_load_opts o = {.sets = sets, .nsets = 1, .env = no_env};
	struct cfg_errors errs = {0};
	cfg_unload();
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
	st = store_test_open(dir, sizeof(dir));
}

static void teardown(void)
{
	store_test_close(st, dir);
	cfg_unload();
}

TestSuite(relay_handed, .init = setup, .fini = teardown, .timeout = 60);

static json_t *row(int i)
{
	char id[32];
	snprintf(id, sizeof(id), "t%05d", i);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:{}, s:I, s:I, s:I, s:b}", "id", id, "queue", "conversation",
			 "name", "conversation.process", "tenant", "acme", "session_id", "s1", "payload", "attempts",
			 (json_int_t)0, "max_retries", (json_int_t)3, "available_ms", (json_int_t)0, "requeued", 0);
}

Test(relay_handed, a_stopped_relay_holds_no_handed_row)
{
	cr_assert_eq(queue_relay_start(st), SOMA_OK);
	bool (*hand)(json_t *, void *) = atomic_load(&st->task_relay);
	cr_assert_not_null(hand, "the relay takes the lanes' rows");
	json_t *last = NULL;
	for (int b = 0; b < 25; b++) { /* 2,500 rows in batches of 100, as lane groups hand them */
		json_t *rows = json_array();
		for (int i = 0; i < 100; i++)
			json_array_append_new(rows, row(b * 100 + i));
		if (b == 24)
			last = json_incref(json_array_get(rows, 99));
		cr_assert(hand(rows, st->task_relay_arg), "batch %d taken", b);
	}
	queue_relay_stop();
	cr_assert_null(atomic_load(&st->task_relay), "a stopped relay takes no rows");
	cr_assert_eq(last->refcount, 1, "the relay still holds the last row handed (%zu references)",
		     (size_t)last->refcount);
	json_decref(last);
}
