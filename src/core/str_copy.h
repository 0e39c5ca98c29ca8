/*
 * str_copy.h - bounded string copies into fixed buffers, for the per-message paths.
 *
 * DESIGN: snprintf(dst, cap, "%s", src) costs several hundred instructions in glibc's formatter
 * for what is a strlen and a memcpy; a chat message makes a few dozen such copies (ids into
 * store ops, the model name of every stream chunk). str_copy gives the same bytes: the first
 * cap - 1 bytes of src at most, then a NUL. Any thread; no state.
 */
#ifndef SOMA_CORE_STR_COPY_H
#define SOMA_CORE_STR_COPY_H

#include <stddef.h>
#include <string.h>

/* snprintf(dst, cap, "%s", src) for cap > 0 (a NULL src gives glibc's "(null)"). Returns the bytes copied (not the
 * length of src), so pieces chain: n += str_copy(dst + n, cap - n, next) writes what
 * snprintf(dst, cap, "%s%s", first, next) writes. */
static inline size_t str_copy(char *dst, size_t cap, const char *src)
{
	if (!src)
		src = "(null)";
	size_t n = strlen(src); /* (as snprintf, which also measures all of src) */
	if (n > cap - 1)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

#endif
