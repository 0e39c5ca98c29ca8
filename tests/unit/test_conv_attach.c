/*
 * test_conv_attach.c - attached files in the messages the LLM receives
 * (src/tasks/conversation_attach.c, conv_build_messages in conversation_prep.c): which stored
 * types are text, the note each file gets, and a turn with attachments built once, counted in
 * the budget at its length, with nothing of the stored row but role and content sent.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/json_out.h"
#include "tasks/conversation_int.h"

Test(conv_attach, text_types)
{
	static const char *const text[] = {"text/plain",	   "text/csv; charset=utf-8", "TEXT/Markdown",
					   "application/json",	   "application/xml",	      "application/ld+json",
					   "application/atom+xml", "application/x-yaml",      "application/javascript"};
	static const char *const other[] = {"image/png", "application/pdf",   "application/octet-stream",
					    "text/",	 "application/",      "application/+json",
					    "",		 "application/jsonx", "audio/json"};
	for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
		cr_assert(conv_mime_is_text(text[i]), "%s", text[i]);
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		cr_assert(!conv_mime_is_text(other[i]), "%s", other[i]);
	cr_assert(!conv_mime_is_text(NULL));
}

static void same_note(const struct conv_file *cf, const char *want)
{
	char *got = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&got, &len);
	conv_attachment_write(f, cf);
	fclose(f);
	cr_assert_str_eq(got, want);
	free(got);
}

Test(conv_attach, notes)
{
	struct conv_file cf = {.id = "a1",
			       .name = "n.txt",
			       .mime = "text/plain",
			       .size = 5,
			       .state = CONV_FILE_TEXT,
			       .text = "hello",
			       .len = 5,
			       .shown = 5};
	same_note(&cf, "[Attached file: n.txt (text/plain, 5 bytes)]\nhello\n[End of n.txt]");
	cf.size = 9;
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes)]\nhello\n"
		       "[Cut: only the first 5 of 9 bytes of n.txt are included (llm.attachment_max_bytes)]");
	cf.shown = cf.len = 0;
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes): its text is not included (this message's "
		       "files used llm.attachment_max_bytes)]");
	cf.state = CONV_FILE_OTHER;
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes): not text, its content is not included]");
	cf.state = CONV_FILE_MISSING;
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes): its content is no longer available]");
	cf = (struct conv_file){.id = "a1", .state = CONV_FILE_GONE};
	same_note(&cf, "[Attached file a1: no longer available]");
	cf.state = CONV_FILE_UNREADABLE;
	same_note(&cf, "[Attached file a1: could not be read]");
}

static int calls;

/* A turn fn that appends "+" and n characters of file text (ctx: n). */
static json_t *fake_turn(void *ctx, json_t *row)
{
	calls++;
	size_t n = *(size_t *)ctx;
	char *s = malloc(n + 2);
	s[0] = '+';
	memset(s + 1, 'f', n);
	s[n + 1] = '\0';
	json_t *msg = json_pack("{s:s, s:s+}", "role", "user", "content",
				json_string_value(json_object_get(row, "content")), s);
	free(s);
	return msg;
}

Test(conv_attach, a_turn_with_files_is_built_once_and_counted)
{
	static char *const no_env[] = {NULL};
	const char *sets[] = {"llm.max_context_tokens=100", "llm.system_prompt="}; /* 400 characters */
	struct cfg_load_opts o = {.sets = sets, .nsets = 2, .env = no_env};
	struct cfg_errors errs = {0};
	cfg_unload();
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK);
	/* newest first: a user turn naming a file, the reply before it, an older user turn */
	json_t *rows = json_pack("[{s:s, s:s, s:s, s:{s:s, s:s}, s:[s]}, {s:s, s:s}, {s:s, s:s}]", "role", "user",
				 "content", "q2", "id", "e3", "msg", "role", "user", "content", "q2", "attachments",
				 "att-1", "role", "assistant", "content", "a1", "role", "user", "content", "q1");
	size_t n = 10;
	/* all three fit: sent oldest first, the file's turn as the fn built it, once */
	calls = 0;
	json_t *got = conv_build_messages(rows, 0, fake_turn, &n);
	char *text = json_out(got, 0, NULL);
	cr_assert_str_eq(text, "[{\"role\":\"user\",\"content\":\"q1\"},{\"role\":\"assistant\",\"content\":\"a1\"},"
			       "{\"role\":\"user\",\"content\":\"q2+ffffffffff\"}]");
	cr_assert_eq(calls, 1);
	free(text);
	json_decref(got);
	/* the file's text takes the room of the older turns: 400 - 398 leaves 2, "a1" fits, "q1" not */
	n = 395;
	got = conv_build_messages(rows, 0, fake_turn, &n);
	cr_assert_eq(json_array_size(got), 2);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(got, 0), "content")), "a1");
	json_decref(got);
	/* without a fn (or with the fn's message too large) the stored message is sent */
	got = conv_build_messages(rows, 0, NULL, NULL);
	cr_assert_eq(json_array_size(got), 3);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(got, 2), "content")), "q2");
	cr_assert_eq(json_object_size(json_array_get(got, 2)), 2, "only role and content");
	json_decref(got);
	json_decref(rows);
	cfg_unload();
}
