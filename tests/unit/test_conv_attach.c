/*
 * test_conv_attach.c - attached files in the messages the LLM receives
 * (src/tasks/conversation_attach.c, conv_build_messages in conversation_prep.c): which stored
 * types are text, the note each file gets, and a turn with attachments built once, counted in
 * the budget at its length, with nothing of the stored row but role and content sent; its files'
 * text held to its share of the budget, an older one kept smaller rather than dropped, the newest
 * turn's cut marked.
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
	cf.cut_by = "llm.max_context_tokens";
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes)]\nhello\n"
		       "[Cut: only the first 5 of 9 bytes of n.txt are included (llm.max_context_tokens)]");
	cf.shown = cf.len = 0;
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes): its text is not included (no room for it in "
		       "the context: llm.max_context_tokens)]");
	cf.cut_by = NULL;
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes): its text is not included (this message's "
		       "files used llm.attachment_max_bytes)]");
	cf.state = CONV_FILE_OTHER;
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes): not text, its content is not included]");
	cf.state = CONV_FILE_MISSING;
	same_note(&cf, "[Attached file: n.txt (text/plain, 9 bytes): its stored content was not found, so it is not "
		       "included]");
	cf = (struct conv_file){.id = "a1", .state = CONV_FILE_GONE};
	same_note(&cf, "[Attached file a1: no longer available]");
	cf.state = CONV_FILE_UNREADABLE;
	same_note(&cf, "[Attached file a1: could not be read]");
}

static int calls;

/* A turn fn of a turn whose files hold n characters (ctx: n): its text (or "[left out]"), "+",
 * then the files: n 'f's when they fit file_max, else file_max 'f's and "[cut]", "[named]" at 0. */
static json_t *fake_turn(void *ctx, json_t *row, size_t file_max, bool with_text)
{
	calls++;
	size_t n = *(size_t *)ctx, shown = n < file_max ? n : file_max;
	char *s = malloc(shown + 8);
	memset(s, 'f', shown);
	snprintf(s + shown, 8, "%s", shown == n ? "" : shown ? "[cut]" : "[named]");
	json_t *msg = json_pack("{s:s, s:s++}", "role", "user", "content",
				with_text ? json_string_value(json_object_get(row, "content")) : "[left out]", "+", s);
	free(s);
	return msg;
}

static void load(const char *tokens)
{
	static char *const no_env[] = {NULL};
	const char *sets[] = {tokens, "llm.system_prompt="};
	struct cfg_load_opts o = {.sets = sets, .nsets = 2, .env = no_env};
	struct cfg_errors errs = {0};
	cfg_unload();
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK);
}

static const char *content_of(json_t *msgs, size_t i)
{
	return json_string_value(json_object_get(json_array_get(msgs, i), "content"));
}

static char *repeat(char c, size_t n) /* n c's (malloc'd) */
{
	char *s = malloc(n + 1);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

Test(conv_attach, a_turn_with_files_is_built_once_and_counted)
{
	load("llm.max_context_tokens=100"); /* 400 characters */
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
	/* the file's text takes at most half of what the newest text leaves ((400 - 2) / 2 = 199): the
	 * older turns keep their room */
	n = 395;
	got = conv_build_messages(rows, 0, fake_turn, &n);
	cr_assert_eq(json_array_size(got), 3);
	cr_assert_eq(strlen(content_of(got, 2)), 2 + 1 + 199 + 5);
	cr_assert_str_eq(content_of(got, 0), "q1");
	json_decref(got);
	/* without a fn the stored message is sent */
	got = conv_build_messages(rows, 0, NULL, NULL);
	cr_assert_eq(json_array_size(got), 3);
	cr_assert_str_eq(content_of(got, 2), "q2");
	cr_assert_eq(json_object_size(json_array_get(got, 2)), 2, "only role and content");
	json_decref(got);
	json_decref(rows);
	cfg_unload();
}

Test(conv_attach, an_older_turn_with_files_is_kept_smaller_rather_than_dropped)
{
	load("llm.max_context_tokens=100"); /* 400 characters */
	char *q3 = repeat('u', 100), *a2 = repeat('r', 150), *q2 = repeat('t', 145);
	/* the file share is (400 - 100) / 2 = 150; after q3 and a2, 150 characters are left */
	json_t *rows = json_pack("[{s:s}, {s:s, s:s}, {s:s, s:s, s:[s]}, {s:s, s:s}, {s:s, s:s}]", "content", q3,
				 "role", "assistant", "content", a2, "role", "user", "content", "q2", "attachments",
				 "att-1", "role", "assistant", "content", "a1", "role", "user", "content", "q1");
	json_object_set_new(json_array_get(rows, 0), "role", json_string("user"));
	size_t n = 1000;
	calls = 0; /* whole: 2 + 1 + 150 + 5 > 150; named only: "q2+[named]" */
	json_t *got = conv_build_messages(rows, 0, fake_turn, &n);
	cr_assert_eq(json_array_size(got), 5);
	cr_assert_str_eq(content_of(got, 2), "q2+[named]");
	cr_assert_eq(calls, 2);
	json_decref(got);
	/* its own text does not fit either: the files named, the text left out */
	json_object_set_new(json_array_get(rows, 2), "content", json_string(q2));
	got = conv_build_messages(rows, 0, fake_turn, &n);
	cr_assert_eq(json_array_size(got), 5);
	cr_assert_str_eq(content_of(got, 2), "[left out]+[named]");
	json_decref(got);
	/* nothing of it fits: the window ends there, as with any turn */
	got = conv_build_messages(rows, 140, fake_turn, &n); /* 260: share 80, 10 left after a2 */
	cr_assert_eq(json_array_size(got), 2);
	cr_assert_str_eq(content_of(got, 0), a2);
	json_decref(got);
	json_decref(rows);
	free(q3);
	free(a2);
	free(q2);
	cfg_unload();
}

Test(conv_attach, the_newest_turn_is_never_cut_without_its_marker)
{
	load("llm.max_context_tokens=300"); /* 1200 characters */
	char *big = repeat('b', 5000);
	json_t *rows = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "user", "content", big, "role", "assistant",
				 "content", "a1");
	json_t *got = conv_build_messages(rows, 0, NULL, NULL);
	cr_assert_eq(json_array_size(got), 1);
	const char *c = content_of(got, 0);
	const char *mark = "\n[Cut: only the first 1100 of 5000 characters of this message are included "
			   "(llm.max_context_tokens)]";
	cr_assert_eq(strlen(c), 1200, "the marker counted in the budget");
	cr_assert(strlen(c) > strlen(mark) && strcmp(c + strlen(c) - strlen(mark), mark) == 0, "%s", c + 1100);
	json_decref(got);
	json_decref(rows);
	free(big);
	cfg_unload();
}
