/*
 * config_ini.c - the INI file format of --config / ./somaagent.ini (see config_int.h).
 *
 * DESIGN: one pass over the file, one line at a time, into one buffer of CFG_INI_MAX_LINE bytes
 * allocated per parse. A line is never handed on in pieces: one longer than the buffer is read
 * to its end, reported as file:line and skipped (libinih, used before, cut lines at 199 bytes and
 * took a piece that began with a space for a continuation, so a long system_prompt silently
 * became its own tail). The rules, as docs/configuration.md states them:
 *  - a UTF-8 byte order mark at the start is skipped; "\n" or "\r\n" ends a line;
 *  - spaces around a line are ignored; a blank line, or one starting with ; or #, is a comment;
 *  - [section] (spaces inside the brackets ignored) may be followed by a comment only;
 *  - name = value: split at the first = (or :, which inih also took), both sides trimmed; in
 *    the value a ; that follows a space or tab starts a comment (inih's rule, kept so a file
 *    written for it means the same); an indented line is a line like any other, not a
 *    continuation of the previous value;
 *  - anything else, or a NUL byte, is a syntax error; every such line is reported, not just
 *    the first.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/config_int.h"

#define SECTION_MAX 128 /* bytes of a section name, with its NUL */

enum line_kind {
	LINE_TEXT, /* a whole line is in the buffer */
	LINE_LONG, /* longer than the buffer: consumed, not kept */
	LINE_NUL,  /* held a NUL byte: consumed, not kept */
	LINE_END,  /* no more lines */
};

/* Reads one line without its newline into buf[cap]; a line that does not fit is read to its
 * end all the same, so the next call starts on the next line. */
static enum line_kind read_line(FILE *f, char *buf, size_t cap)
{
	size_t n = 0;
	bool long_line = false, nul = false, any = false;
	int c;
	while ((c = getc(f)) != EOF && c != '\n') {
		any = true;
		if (c == '\0')
			nul = true;
		else if (n + 1 < cap)
			buf[n++] = (char)c;
		else
			long_line = true;
	}
	buf[n] = '\0';
	if (c == EOF && !any)
		return LINE_END;
	return long_line ? LINE_LONG : nul ? LINE_NUL : LINE_TEXT;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* Ends s (the text after the =) at its inline comment: a ; right after a space or tab. A ; right
 * after the = is kept, as inih kept it. */
static void cut_inline_comment(char *s)
{
	for (char *p = s + 1; *p; p++) {
		if (*p == ';' && isspace((unsigned char)p[-1])) {
			*p = '\0';
			return;
		}
	}
}

/* "[name]" with an optional comment after it: copies the trimmed name into section. */
static bool parse_section(char *s, char *section)
{
	char *close = strchr(s, ']');
	if (!close)
		return false;
	*close = '\0';
	const char *rest = trim(close + 1);
	if (*rest && *rest != ';' && *rest != '#')
		return false;
	const char *name = trim(s + 1);
	size_t len = strlen(name);
	if (!len || len >= SECTION_MAX)
		return false;
	memcpy(section, name, len + 1);
	return true;
}

void cfg_ini_parse(FILE *f, const char *path, cfg_ini_value_fn on_value, void *user, struct cfg_errors *errs)
{
	char *buf = malloc(CFG_INI_MAX_LINE + 1), section[SECTION_MAX] = "";
	if (!buf) {
		cfg_error_add(errs, "%s: cannot read the file: out of memory", path);
		return;
	}
	enum line_kind kind;
	for (int line = 1; (kind = read_line(f, buf, CFG_INI_MAX_LINE + 1)) != LINE_END; line++) {
		if (kind == LINE_LONG) {
			cfg_error_add(errs,
				      "%s:%d: line is longer than %d bytes and was not read; shorten it, or set "
				      "the value through its SOMA_* environment variable",
				      path, line, CFG_INI_MAX_LINE);
			continue;
		}
		if (kind == LINE_NUL) {
			cfg_error_add(errs, "%s:%d: line holds a NUL byte; the file must be text", path, line);
			continue;
		}
		char *s = buf;
		if (line == 1 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
			s += 3;
		s = trim(s);
		if (!*s || *s == ';' || *s == '#')
			continue;
		char *sep = s + strcspn(s, "=:");
		if (*s == '[' ? !parse_section(s, section) : (*sep == '\0' || sep == s)) {
			cfg_error_add(errs, "%s:%d: syntax error; expected [section], key = value, or a ; comment",
				      path, line);
			continue;
		}
		if (*s == '[')
			continue;
		*sep = '\0';
		char *value = sep + 1;
		cut_inline_comment(value);
		on_value(user, section, trim(s), trim(value), line);
	}
	if (ferror(f))
		cfg_error_add(errs, "%s: read error before the end of the file; check the file and its disk", path);
	free(buf);
}
