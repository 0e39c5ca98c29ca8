/*
 * test_event_text.c - an event's stored text (src/store/sqlite_chat.c): the submitting thread
 * writes the event out but its seq (store_sql_prepare), the writer appends the seq. The text
 * handed to the commit hook (op->event_text) and stored as the event's body must be exactly what
 * json_out makes of the committed event (seq, session_id and created_at included), for the user's
 * message and for a reply.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/event.h"
#include "core/json_out.h"
#include "helpers.h"
#include "store/store.h"

static char dir[64];
static struct store *st;

static void setup(void)
{
	st = store_test_open(dir, sizeof(dir));
}

static void teardown(void)
{
	store_test_close(st, dir);
}

TestSuite(event_text, .init = setup, .fini = teardown, .timeout = 60);

/* Runs an op of kind with a new event of type on session s1; checks its texts; returns its seq. */
static int64_t check_event(enum store_op_kind kind, const char *type, const char *message)
{
	struct store_op *op = store_op_new(kind, "acme");
	cr_assert_not_null(op);
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	snprintf(op->subject, sizeof(op->subject), "alice");
	op->event = chat_event_new("s1", strcmp(type, "user") == 0 ? "user" : "assistant", type, message, NULL, NULL);
	cr_assert_not_null(op->event);
	json_object_del(op->event, "created_at"); /* the store sets it */
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	cr_assert_not_null(op->event_text);
	char *want = json_out(op->event, 0, NULL);
	cr_assert_not_null(want);
	cr_assert_str_eq(op->event_text, want);
	cr_assert_not_null(json_object_get(op->event, "created_at"));
	cr_assert_eq(json_integer_value(json_object_get(op->event, "seq")), op->seq);
	json_t *stored = json_loads(op->event_text, 0, NULL);
	cr_assert_not_null(stored, "stored text is JSON: %s", op->event_text);
	cr_assert(json_equal(stored, op->event));
	json_decref(stored);
	char sql[200];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE session_id = 's1' AND seq = %lld AND body = ?",
		 (long long)op->seq);
	cr_assert_eq(db_query_int(dir, sql, want), 1, "the stored body is the text");
	free(want);
	int64_t n = op->seq;
	store_op_free(op);
	return n;
}

Test(event_text, the_text_of_a_message_and_of_a_reply_is_the_committed_event_written_out)
{
	cr_assert_eq(check_event(STORE_OP_MESSAGE, "user", "hello \"there\"\n"), 1);
	cr_assert_eq(check_event(STORE_OP_EVENT_APPEND, "assistant.final", "hi"), 2);
	cr_assert_eq(check_event(STORE_OP_MESSAGE, "user", "again"), 3);
}
