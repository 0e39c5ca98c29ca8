/*
 * log.c - see log.h.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/utf8.h"

static enum log_level min_level = LOG_INFO;
static enum log_format out_format = LOG_FORMAT_JSON;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level level, enum log_format format)
{
	min_level = level;
	out_format = format;
}

bool log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	return false;
}

bool log_enabled(enum log_level level)
{
	return level >= min_level;
}

bool log_json_escape(char *buf, size_t cap, size_t *pos, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t p = *pos;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];
		size_t n;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			n = 2;
		} else if (c == '\n') {
			memcpy(esc, "\\n", 2);
			n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			n = 6;
		} else {
			esc[0] = (char)c;
			n = 1;
		}
		if (p + n >= cap) {
			*pos = p;
			return false;
		}
		memcpy(buf + p, esc, n);
		p += n;
	}
	*pos = p;
	return true;
}

/* Appends a raw string; false when it does not fit. */
static bool put(char *buf, size_t cap, size_t *pos, const char *s)
{
	size_t n = strlen(s);
	if (*pos + n >= cap)
		return false;
	memcpy(buf + *pos, s, n);
	*pos += n;
	return true;
}

/* Appends s for a text log line: a control character (a newline that would start a forged line,
 * an escape sequence for the terminal) is written as \xNN; false when it does not fit. */
static bool put_text(char *buf, size_t cap, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		bool ctl = *c < 0x20 || *c == 0x7f;
		if (*pos + (ctl ? 4 : 1) >= cap)
			return false;
		if (ctl) {
			memcpy(buf + *pos, "\\x", 2);
			buf[*pos + 2] = hex[*c >> 4];
			buf[*pos + 3] = hex[*c & 15];
			*pos += 4;
		} else {
			buf[(*pos)++] = (char)*c;
		}
	}
	return true;
}

static bool put_field_json(char *buf, size_t cap, size_t *pos, const struct log_field *f)
{
	char num[48];
	if (f->kind == LOG_FIELD_STR && !f->str)
		return true;
	bool ok = put(buf, cap, pos, ",\"") && log_json_escape(buf, cap, pos, f->key, strlen(f->key)) &&
		  put(buf, cap, pos, "\":");
	if (!ok)
		return false;
	switch (f->kind) {
	case LOG_FIELD_STR:
		return put(buf, cap, pos, "\"") && log_json_escape(buf, cap, pos, f->str, strlen(f->str)) &&
		       put(buf, cap, pos, "\"");
	case LOG_FIELD_INT:
		snprintf(num, sizeof(num), "%lld", f->num);
		return put(buf, cap, pos, num);
	case LOG_FIELD_DBL:
		snprintf(num, sizeof(num), "%.3f", f->dbl);
		return put(buf, cap, pos, num);
	}
	return true;
}

static bool put_field_text(char *buf, size_t cap, size_t *pos, const struct log_field *f)
{
	char val[48];
	const char *v = val;
	if (f->kind == LOG_FIELD_STR) {
		if (!f->str)
			return true;
		v = f->str;
	} else if (f->kind == LOG_FIELD_INT) {
		snprintf(val, sizeof(val), "%lld", f->num);
	} else {
		snprintf(val, sizeof(val), "%.3f", f->dbl);
	}
	return put(buf, cap, pos, " ") && put(buf, cap, pos, f->key) && put(buf, cap, pos, "=") &&
	       put_text(buf, cap, pos, v);
}

#define LOG_TAIL_ROOM 512 /* kept after a cut message: its service and short fields */

/* The end of buf[start..pos) without a UTF-8 sequence cut short at its end. */
static size_t utf8_whole(const char *buf, size_t start, size_t pos)
{
	size_t lead = pos;
	while (lead > start && ((unsigned char)buf[lead - 1] & 0xC0) == 0x80)
		lead--;
	if (lead == start || (unsigned char)buf[lead - 1] < 0xC0)
		return pos; /* no sequence open at the end */
	unsigned char c = (unsigned char)buf[lead - 1];
	size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
	return pos - (lead - 1) < need ? lead - 1 : pos;
}

void log_emit(enum log_level level, const char *service, const struct log_field *fields, size_t n, const char *fmt, ...)
{
	if (level < min_level)
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	utf8_repair(msg); /* cut at 2 KiB inside a character, or bytes from outside: a line stays UTF-8 */

	char ts[CLOCK_RFC3339_LEN + 1];
	clock_rfc3339(clock_wall_ms(), ts, sizeof(ts));
	char line[LOG_LINE_MAX];
	size_t pos = 0, cap = sizeof(line) - 32; /* room for the truncation marker and newline */
	bool ok;
	if (out_format == LOG_FORMAT_JSON) {
		/* a message too long (escaped) is cut at a character, leaving room for the rest; a part
		 * that does not fit after it is left out whole: the line stays one JSON object */
		(void)(put(line, cap, &pos, "{\"ts\":\"") && put(line, cap, &pos, ts) &&
		       put(line, cap, &pos, "\",\"level\":\"") && put(line, cap, &pos, level_names[level]) &&
		       put(line, cap, &pos, "\",\"msg\":\""));
		size_t start = pos;
		bool whole = log_json_escape(line, cap - LOG_TAIL_ROOM, &pos, msg, strlen(msg));
		if (!whole)
			pos = utf8_whole(line, start, pos);
		line[pos++] = '"';
		size_t good = pos;
		ok = put(line, cap, &pos, ",\"service\":\"") &&
		     log_json_escape(line, cap, &pos, service, strlen(service)) && put(line, cap, &pos, "\"");
		for (size_t i = 0; ok && i < n; i++)
			if ((ok = put_field_json(line, cap, &pos, &fields[i])))
				good = pos;
		if (!ok)
			pos = good;
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "%s}\n",
					ok && whole ? "" : ",\"truncated\":true");
	} else {
		ok = put(line, cap, &pos, ts) && put(line, cap, &pos, " ") &&
		     put(line, cap, &pos, level_names[level]) && put(line, cap, &pos, " [") &&
		     put(line, cap, &pos, service) && put(line, cap, &pos, "] ") && put_text(line, cap, &pos, msg);
		for (size_t i = 0; ok && i < n; i++)
			ok = put_field_text(line, cap, &pos, &fields[i]);
		if (!ok)
			pos = utf8_whole(line, 0, pos);
		pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "%s\n", ok ? "" : " [truncated]");
	}
	ssize_t w = write(STDERR_FILENO, line, pos);
	(void)w;
}
