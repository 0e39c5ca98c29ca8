/*
 * fuzz_multipart.c - libFuzzer harness: arbitrary bytes as an upload body (and, from its first
 * line, a Content-Type) through the multipart parser. Invariants: no crash, no sanitizer report,
 * every part lies inside the body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *nl = memchr(text, '\n', size);
	if (!nl)
		return 0;
	char boundary[80];
	struct str ct = {text, (size_t)(nl - text)};
	if (!multipart_boundary(ct, boundary, sizeof(boundary)))
		return 0;
	const char *body = nl + 1;
	size_t len = size - (size_t)(body - text);
	static struct multipart_part parts[64];
	int n = multipart_parse(body, len, boundary, parts, 64);
	for (int i = 0; i < n; i++) {
		if (parts[i].data < body || parts[i].data + parts[i].len > body + len)
			abort();
	}
	return 0;
}
