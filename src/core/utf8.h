/*
 * utf8.h - making text that was cut or built from bytes valid UTF-8.
 *
 * DESIGN: a message copied into a fixed buffer (snprintf, "%.400s") may be cut inside a
 * multi-byte character, and text a task or a provider produced may hold bytes that are not UTF-8.
 * Such text cannot become a JSON string (jansson refuses it: the row holding it could not be read
 * back, a log line would not parse), so it is repaired where it is stored: utf8_repair keeps every
 * valid sequence, drops an incomplete one at the end (the cut), and writes '?' for each other
 * invalid byte. Any thread; no state.
 */
#ifndef SOMA_CORE_UTF8_H
#define SOMA_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Repairs the NUL-terminated s in place (it never grows); returns true when it changed it. */
bool utf8_repair(char *s);

#endif
