/*
 * conversation_attach.c - the files attached to a user turn, in the message the LLM receives
 * (see conversation_int.h).
 *
 * DESIGN: the context read gives a user turn that named attachments their ids (row member
 * "attachments"; the stored event and the store's context cache keep only the ids, never a
 * file's text). conv_build_messages asks conv_attached_turn for such a turn's OpenAI message as
 * it fills the window, newest turn first, so only the turns the window reaches are read, each
 * once per reply (an older turn that does not fit whole up to three times, smaller each time): the
 * message's text, then per file a note naming it (name, type, size) and, when its stored type is
 * text-like (conv_mime_is_text), its text. The files' text is bounded per message by
 * llm.attachment_max_bytes and by the share of the context conv_build_messages gives (file_max:
 * half of what the system prompt and the newest message leave), whichever is smaller; a cut is
 * always marked and names that setting. Being in the message, the text counts against
 * llm.max_context_tokens like the rest. Each attachment row is read with the task's tenant (the
 * message's: the store checked that the ids were that tenant's when it took the message). A file
 * deleted since is named as no longer available; one whose bytes are not in this node's
 * data.dir/blobs (gone, or a worker that does not share the gateways' blobs) as not found, with a
 * warning naming the id and the path: the reply goes on without it. Worker thread (a store read
 * and a file read per file); no state.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/str_copy.h"
#include "core/utf8.h"
#include "store/store.h"
#include "tasks/conversation_int.h"

bool conv_mime_is_text(const char *mime)
{
	static const char *const app[] = {"json",  "xml",	    "javascript", "ecmascript",	 "x-javascript",
					  "x-sh",  "x-shellscript", "sql",	  "yaml",	 "x-yaml",
					  "toml",  "x-toml",	    "csv",	  "x-ndjson",	 "ndjson",
					  "x-tex", "x-latex",	    "x-python",	  "x-perl",	 "x-ruby",
					  "x-php", "graphql",	    "x-subrip",	  "x-httpd-php", "rtf"};
	if (!mime)
		return false;
	size_t len = strcspn(mime, "; \t"); /* the type without its parameters (charset=...) */
	if (len > 5 && strncasecmp(mime, "text/", 5) == 0)
		return true;
	if (len <= 12 || strncasecmp(mime, "application/", 12) != 0)
		return false;
	const char *sub = mime + 12;
	size_t n = len - 12;
	if ((n > 5 && (strncasecmp(sub + n - 5, "+json", 5) == 0)) ||
	    (n > 4 && strncasecmp(sub + n - 4, "+xml", 4) == 0))
		return true; /* application/ld+json, application/atom+xml, ... */
	for (size_t i = 0; i < sizeof(app) / sizeof(app[0]); i++)
		if (strlen(app[i]) == n && strncasecmp(sub, app[i], n) == 0)
			return true;
	return false;
}

void conv_attachment_write(FILE *f, const struct conv_file *cf)
{
	const char *name = cf->name ? cf->name : "";
	const char *mime = cf->mime ? cf->mime : "";
	long long size = (long long)cf->size;
	switch (cf->state) {
	case CONV_FILE_TEXT:
		if (cf->shown == 0 && cf->size > 0) {
			fprintf(f, "[Attached file: %s (%s, %lld bytes): its text is not included (%s)]", name, mime,
				size,
				cf->cut_by ? "no room for it in the context: llm.max_context_tokens"
					   : "this message's files used llm.attachment_max_bytes");
			return;
		}
		fprintf(f, "[Attached file: %s (%s, %lld bytes)]\n", name, mime, size);
		fwrite(cf->text, 1, cf->len, f);
		if ((int64_t)cf->shown < cf->size)
			fprintf(f, "\n[Cut: only the first %zu of %lld bytes of %s are included (%s)]", cf->shown, size,
				name, cf->cut_by ? cf->cut_by : "llm.attachment_max_bytes");
		else
			fprintf(f, "\n[End of %s]", name);
		return;
	case CONV_FILE_OTHER:
		fprintf(f, "[Attached file: %s (%s, %lld bytes): not text, its content is not included]", name, mime,
			size);
		return;
	case CONV_FILE_MISSING:
		fprintf(f,
			"[Attached file: %s (%s, %lld bytes): its stored content was not found, so it is not included]",
			name, mime, size);
		return;
	case CONV_FILE_GONE:
		fprintf(f, "[Attached file %s: no longer available]", cf->id);
		return;
	case CONV_FILE_UNREADABLE:
		fprintf(f, "[Attached file %s: could not be read]", cf->id);
		return;
	}
}

/* Whether this thread has not warned of attachment id's missing bytes lately: every context build
 * reads the files of every turn in its window again, so a file missing on a worker would be logged
 * once per later message (and up to three times per build) without this small memory. */
static bool first_miss(const char *id)
{
	static _Thread_local char seen[8][40];
	static _Thread_local unsigned next;
	for (unsigned i = 0; i < 8; i++)
		if (strncmp(seen[i], id, sizeof(seen[i]) - 1) == 0)
			return false;
	snprintf(seen[next++ % 8], sizeof(seen[0]), "%s", id);
	return true;
}

/* Reads the first bytes of cf's file (sha256, the blob uploads.c stored at
 * data.dir/blobs/<2 hex>/<sha256>, store_blob_path) that fit max into *buf (malloc'd; the caller frees) and sets
 * cf's text, len, shown and state: TEXT (repaired to UTF-8, cut on a character), OTHER when the
 * bytes hold a NUL (not text whatever the type says), MISSING when the file is gone. */
static void read_text(struct conv_file *cf, const char *sha, size_t max, char **buf)
{
	size_t want = cf->size < 0 ? 0 : (size_t)cf->size;
	want = want > max ? max + 1 : want; /* one more: where the cut falls on a character */
	char path[4096];
	cf->state = CONV_FILE_MISSING;
	if (!sha || strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64)
		return;
	store_blob_path(path, sizeof(path), sha);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("conversation", "attachment %s: cannot read %s: %s", cf->id, path, strerror(errno));
		else if (first_miss(cf->id)) /* deleted from data.dir, or data.dir/blobs not shared */
			log_warn("conversation",
				 "attachment %s: its bytes are not at %s (is data.dir/blobs shared with this worker?); "
				 "the model is told the content was not found",
				 cf->id, path);
		return;
	}
	size_t got = 0;
	*buf = malloc(want + 1);
	while (*buf && got < want) {
		ssize_t r = read(fd, *buf + got, want - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (!*buf) {
		cf->state = CONV_FILE_UNREADABLE;
		return;
	}
	cf->shown = conv_utf8_prefix(*buf, got, max);
	if (memchr(*buf, 0, cf->shown)) {
		cf->state = CONV_FILE_OTHER;
		return;
	}
	(*buf)[cf->shown] = '\0';
	utf8_repair(*buf); /* invalid bytes become '?': the text goes into a JSON string */
	cf->text = *buf;
	cf->len = strlen(*buf);
	cf->state = CONV_FILE_TEXT;
}

/* Writes the note of attachment id to f, reading it as t's tenant; *left: the text bytes this
 * message's files may still show; cut_by: the setting that set them (NULL: attachment_max_bytes). */
static void attach_one(struct task_ctx *t, const char *id, size_t *left, const char *cut_by, FILE *f)
{
	struct conv_file cf = {.id = id ? id : "", .state = CONV_FILE_GONE, .cut_by = cut_by};
	struct store_op *op = store_op_new(STORE_OP_ATTACHMENT_GET, t->tenant);
	char *buf = NULL;
	enum soma_err err = SOMA_ERR_NOMEM;
	if (op && id && strlen(id) < sizeof(op->task_id)) {
		str_copy(op->task_id, sizeof(op->task_id), id);
		err = store_op_wait(t->store, op);
	}
	if (err == SOMA_OK) {
		cf.name = json_string_value(json_object_get(op->row, "filename"));
		cf.mime = json_string_value(json_object_get(op->row, "mime"));
		cf.size = json_integer_value(json_object_get(op->row, "size"));
		cf.state = CONV_FILE_OTHER;
		if (conv_mime_is_text(cf.mime))
			read_text(&cf, json_string_value(json_object_get(op->row, "sha256")), *left, &buf);
		if (cf.state == CONV_FILE_TEXT)
			*left -= cf.shown;
	} else if (err != SOMA_ERR_NOT_FOUND) {
		log_warn("conversation", "session %s: attachment %s could not be read (%s); the model is told",
			 t->session_id, cf.id, soma_err_str(err));
		cf.state = CONV_FILE_UNREADABLE;
	}
	conv_attachment_write(f, &cf);
	free(buf);
	store_op_free(op);
}

json_t *conv_attached_turn(void *ctx, json_t *row, size_t file_max, bool with_text)
{
	struct task_ctx *t = ctx;
	json_t *content = json_object_get(row, "content"), *ids = json_object_get(row, "attachments"), *id;
	size_t left = (size_t)cfg_int(CFG_LLM_ATTACHMENT_MAX_BYTES), len = 0, i;
	const char *cut_by = NULL;
	if (file_max < left) { /* the context's share is the smaller bound: the notes name it */
		left = file_max;
		cut_by = "llm.max_context_tokens";
	}
	char *text = NULL;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return NULL;
	if (with_text)
		fwrite(json_string_value(content) ? json_string_value(content) : "", 1, json_string_length(content), f);
	else
		fprintf(f,
			"[The text of this message (%zu characters) is left out: no room for it in the context "
			"(llm.max_context_tokens)]",
			json_string_length(content));
	json_array_foreach(ids, i, id)
	{
		fputs("\n\n", f);
		attach_one(t, json_string_value(id), &left, cut_by, f);
	}
	json_t *msg = NULL;
	if (fclose(f) == 0 && text)
		msg = json_pack("{s:s, s:s%}", "role", json_string_value(json_object_get(row, "role")) ?: "user",
				"content", text, len);
	free(text);
	return msg;
}
