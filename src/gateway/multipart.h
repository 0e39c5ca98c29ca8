/*
 * multipart.h - a multipart/form-data parser (RFC 7578) over a body held in memory (mmap'd
 * upload spool file). Pure function of its input; parts point into the body.
 */
#ifndef SOMA_GATEWAY_MULTIPART_H
#define SOMA_GATEWAY_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

#define MULTIPART_MAX_PARTS 64

struct multipart_part {
	struct str name;	 /* form field name */
	struct str filename;	 /* client's file name, raw (never used as a path) */
	struct str content_type; /* as sent, may be empty */
	const char *data;	 /* part body */
	size_t len;		 /* its length */
};

/* Extracts the boundary from a Content-Type value; false when it is not multipart/form-data
 * with a usable boundary (1..70 characters). */
bool multipart_boundary(struct str content_type, char *out, size_t cap);
/* Splits body into parts. Returns the number of parts, or -1 when the body is malformed or
 * has more than max parts. */
int multipart_parse(const char *body, size_t len, const char *boundary, struct multipart_part *parts, int max);

/* Writes a file name safe to show, to store as JSON and to put in Content-Disposition: the last
 * path component of in, valid UTF-8 cut on a character boundary at MULTIPART_FILENAME_MAX bytes,
 * with control characters, quotes, backslashes and bytes that are not UTF-8 (a Latin-1 name)
 * each replaced by '_'; "upload" when nothing usable is left. cap > MULTIPART_FILENAME_MAX. */
#define MULTIPART_FILENAME_MAX 200
void multipart_clean_filename(struct str in, char *out, size_t cap);

#endif
