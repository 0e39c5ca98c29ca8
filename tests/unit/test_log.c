/*
 * test_log.c - log lines (src/core/log.c) read back from stderr: text lines never carry a raw
 * control character from a message or a field (a newline in a JWT's sub forged a second line),
 * and a message cut inside a UTF-8 character, or holding bytes that are not UTF-8, is still valid
 * UTF-8 in both formats.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

/* What fn logs to stderr, as text. */
static void capture(void (*fn)(void), char *out, size_t cap)
{
	int fds[2];
	cr_assert_eq(pipe(fds), 0);
	int saved = dup(STDERR_FILENO);
	dup2(fds[1], STDERR_FILENO);
	fn();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fds[1]);
	ssize_t n = read(fds[0], out, cap - 1);
	close(fds[0]);
	out[n > 0 ? n : 0] = '\0';
}

static void forged(void)
{
	struct log_field f[] = {{.key = "sub", .kind = LOG_FIELD_STR, .str = "alice\n2026 ERROR [auth] admin"}};
	log_emit(LOG_WARN, "auth", f, 1, "token of %s\r\n1999 INFO [x] y", "mallory");
}

Test(log, text_lines_carry_no_raw_control_characters)
{
	log_setup(LOG_DEBUG, LOG_FORMAT_TEXT);
	char out[4096];
	capture(forged, out, sizeof(out));
	cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line: %s", out);
	cr_assert(strstr(out, "mallory\\x0d\\x0a1999") && strstr(out, "alice\\x0a2026"), "%s", out);
}

static void cut(void)
{
	char big[3000];
	memset(big, 'a', sizeof(big));
	for (size_t i = 2040; i + 1 < sizeof(big); i += 2)
		memcpy(big + i, "\xc3\xa9", 2); /* é from byte 2040 on: the 2 KiB cut falls inside one */
	big[sizeof(big) - 1] = '\0';
	log_emit(LOG_WARN, "x", NULL, 0, "%s \xff", big);
}

Test(log, a_message_cut_inside_a_character_is_valid_json)
{
	log_setup(LOG_DEBUG, LOG_FORMAT_JSON);
	char out[8192];
	capture(cut, out, sizeof(out));
	json_error_t err;
	json_t *line = json_loads(out, 0, &err);
	cr_assert_not_null(line, "%s: %s", err.text, out);
	json_decref(line);
}

static void escaped_past_the_line(void)
{
	char big[2000];
	memset(big, '\t', sizeof(big));
	for (size_t i = 0; i + 5 < sizeof(big); i += 6)
		memcpy(big + i, "\t\t\t\t\xc3\xa9", 6); /* tabs (6 bytes escaped each) and an e-acute */
	big[sizeof(big) - 2] = '\t';
	big[sizeof(big) - 1] = '\0';
	struct log_field f = {.key = "route", .kind = LOG_FIELD_STR, .str = "/v1/health"};
	log_emit(LOG_WARN, "x", &f, 1, "%s", big);
}

/* A message whose escaped form is longer than a line is cut at a character and the line closed:
 * the marker went inside the open string, so the line was not JSON */
Test(log, a_line_cut_at_its_limit_is_one_json_object)
{
	log_setup(LOG_DEBUG, LOG_FORMAT_JSON);
	char out[LOG_LINE_MAX + 64];
	capture(escaped_past_the_line, out, sizeof(out));
	json_error_t err;
	json_t *line = json_loads(out, 0, &err);
	cr_assert_not_null(line, "%s: %.200s", err.text, out + (err.position > 100 ? err.position - 100 : 0));
	cr_assert(json_is_true(json_object_get(line, "truncated")));
	cr_assert_str_eq(json_string_value(json_object_get(line, "service")), "x");
	cr_assert_str_eq(json_string_value(json_object_get(line, "route")), "/v1/health");
	cr_assert_gt(json_string_length(json_object_get(line, "msg")), 1000);
	json_decref(line);
}
