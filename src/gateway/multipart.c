/*
 * multipart.c - see multipart.h.
 */
#include "gateway/multipart.h"

#include <stdio.h>
#include <string.h>

#include "core/json_scan.h"

bool multipart_boundary(struct str ct, char *out, size_t cap)
{
	static const char prefix[] = "multipart/form-data";
	if (ct.len < sizeof(prefix) - 1 || strncasecmp(ct.p, prefix, sizeof(prefix) - 1) != 0)
		return false;
	for (size_t i = sizeof(prefix) - 1; i + 9 <= ct.len; i++) {
		if (strncasecmp(ct.p + i, "boundary=", 9) != 0)
			continue;
		if (ct.p[i - 1] != ';' && ct.p[i - 1] != ' ' && ct.p[i - 1] != '\t')
			continue; /* another parameter ending in "boundary" (xboundary=) */
		const char *v = ct.p + i + 9, *end = ct.p + ct.len;
		if (v < end && *v == '"') {
			v++;
			const char *q = memchr(v, '"', (size_t)(end - v));
			if (!q)
				return false;
			end = q;
		} else {
			const char *semi = memchr(v, ';', (size_t)(end - v));
			if (semi)
				end = semi;
			while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
				end--;
		}
		size_t n = (size_t)(end - v);
		if (n == 0 || n > 70 || n + 1 > cap)
			return false;
		memcpy(out, v, n);
		out[n] = '\0';
		return true;
	}
	return false;
}

static const char *find(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	if (nlen == 0 || hlen < nlen)
		return NULL;
	return memmem(hay, hlen, needle, nlen);
}

/* The value of param (name= or filename=) in a Content-Disposition header, quoted or not. */
static struct str disposition_param(struct str v, const char *param)
{
	size_t plen = strlen(param);
	for (size_t i = 0; i + plen + 1 <= v.len; i++) {
		bool boundary_ok = i == 0 || v.p[i - 1] == ' ' || v.p[i - 1] == ';';
		if (!boundary_ok || strncasecmp(v.p + i, param, plen) != 0 || v.p[i + plen] != '=')
			continue;
		const char *s = v.p + i + plen + 1, *end = v.p + v.len;
		if (s < end && *s == '"') {
			const char *q = memchr(s + 1, '"', (size_t)(end - s - 1));
			return q ? (struct str){s + 1, (size_t)(q - s - 1)} : STR_NULL;
		}
		const char *semi = memchr(s, ';', (size_t)(end - s));
		return (struct str){s, (size_t)((semi ? semi : end) - s)};
	}
	return STR_NULL;
}

static bool parse_part_headers(const char *h, size_t len, struct multipart_part *p)
{
	while (len > 0) {
		const char *eol = find(h, len, "\r\n", 2);
		size_t n = eol ? (size_t)(eol - h) : len;
		const char *colon = memchr(h, ':', n);
		if (colon) {
			struct str name = {h, (size_t)(colon - h)}, value = {colon + 1, n - (size_t)(colon - h) - 1};
			while (value.len && (*value.p == ' ' || *value.p == '\t'))
				value.p++, value.len--;
			if (str_ieq_cstr(name, "content-disposition")) {
				p->name = disposition_param(value, "name");
				p->filename = disposition_param(value, "filename");
			} else if (str_ieq_cstr(name, "content-type")) {
				p->content_type = value;
			}
		}
		if (!eol)
			break;
		len -= n + 2;
		h = eol + 2;
	}
	return p->name.p != NULL;
}

int multipart_parse(const char *body, size_t len, const char *boundary, struct multipart_part *parts, int max)
{
	char delim[80];
	int dlen = snprintf(delim, sizeof(delim), "--%s", boundary);
	if (dlen <= 2 || (size_t)dlen >= sizeof(delim))
		return -1;
	const char *p = find(body, len, delim, (size_t)dlen), *end = body + len;
	int count = 0;
	if (!p)
		return -1;
	for (;;) {
		p += dlen;
		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			return count; /* closing delimiter */
		while (p < end && (*p == ' ' || *p == '\t'))
			p++; /* transport padding (RFC 2046 5.1.1) */
		if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
			return -1;
		p += 2;
		const char *hend = find(p, (size_t)(end - p), "\r\n\r\n", 4);
		if (!hend)
			return -1;
		if (count == max)
			return MULTIPART_TOO_MANY;
		struct multipart_part *part = &parts[count];
		memset(part, 0, sizeof(*part));
		if (!parse_part_headers(p, (size_t)(hend - p), part))
			return -1;
		const char *data = hend + 4;
		char next[84];
		int nlen = snprintf(next, sizeof(next), "\r\n%s", delim);
		const char *stop = find(data, (size_t)(end - data), next, (size_t)nlen);
		if (!stop)
			return -1;
		part->data = data;
		part->len = (size_t)(stop - data);
		count++;
		p = stop + 2;
	}
}

void multipart_clean_filename(struct str in, char *out, size_t cap)
{
	const unsigned char *p = (const unsigned char *)in.p, *end = p + in.len;
	for (const unsigned char *q = p; q < end; q++) {
		if (*q == '/' || *q == '\\')
			p = q + 1;
	}
	size_t o = 0, max = cap - 1 < MULTIPART_FILENAME_MAX ? cap - 1 : MULTIPART_FILENAME_MAX;
	while (p < end) {
		size_t n = *p < 0x80 ? 1 : jscan_utf8_len(p, (size_t)(end - p)); /* 0: not valid UTF-8 */
		if (o + (n ? n : 1) > max)
			break; /* never cut a character in two */
		if (n > 1) {
			memcpy(out + o, p, n);
			o += n;
			p += n;
			continue;
		}
		unsigned char c = *p++;
		out[o++] = (n == 0 || c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '_' : (char)c;
	}
	out[o] = '\0';
	if (!o || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
		snprintf(out, cap, "upload");
}
