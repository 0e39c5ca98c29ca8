/*
 * multipart.h - a multipart/form-data parser (RFC 7578) over a body held in memory (mmap'd
 * upload spool file). Pure function of its input; parts point into the body.
 */
#ifndef SOMA_GATEWAY_MULTIPART_H
#define SOMA_GATEWAY_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

/* The parts of one upload beyond its files: its form fields (session_id, and room for a few a
 * client adds). The caller sizes the parts array as uploads.max_files + this. */
#define MULTIPART_FORM_FIELDS 8
/* multipart_parse's answer when the body has more parts than the array holds */
#define MULTIPART_TOO_MANY (-2)

struct multipart_part {
	struct str name;	 /* form field name */
	struct str filename;	 /* client's file name, raw (never used as a path) */
	struct str content_type; /* as sent, may be empty */
	const char *data;	 /* part body */
	size_t len;		 /* its length */
};

/* Extracts the boundary from a Content-Type value (the parameter named exactly `boundary`, not
 * one ending in it); false when it is not multipart/form-data with a usable boundary (1..70
 * characters). */
bool multipart_boundary(struct str content_type, char *out, size_t cap);
/* Splits body into parts (at most max, into parts[], which the caller owns). Returns the number
 * of parts, -1 when the body is malformed, or MULTIPART_TOO_MANY when it has more than max parts.
 * Spaces and tabs after a boundary (RFC 2046 transport padding) are skipped. */
int multipart_parse(const char *body, size_t len, const char *boundary, struct multipart_part *parts, int max);

/* Writes a file name safe to show, to store as JSON and to put in Content-Disposition: the last
 * path component of in, valid UTF-8 cut on a character boundary at MULTIPART_FILENAME_MAX bytes,
 * with control characters, quotes, backslashes and bytes that are not UTF-8 (a Latin-1 name)
 * each replaced by '_'; "upload" when nothing usable is left. cap > MULTIPART_FILENAME_MAX. */
#define MULTIPART_FILENAME_MAX 200
void multipart_clean_filename(struct str in, char *out, size_t cap);

#endif
