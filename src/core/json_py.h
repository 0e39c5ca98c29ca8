/*
 * json_py.h - reading JSON that Python's json.dumps wrote (a Celery peer's messages and result
 * metas), which may hold two things jansson refuses by default: \u0000 and a lone surrogate
 * escape (\ud800 alone, or \udc00 without a high half before it). json.dumps writes both for a
 * str like "a\x00b" or "\ud800"; refusing them dropped a valid task message (redelivered
 * forever) and read a result as PENDING.
 *
 * DESIGN: \u0000 is kept (JSON_ALLOW_NUL: a string's length counts past it; code that reads a
 * string as a C string sees it cut at the NUL, so readers of names and ids check for it). A lone
 * surrogate escape becomes \ufffd (U+FFFD REPLACEMENT CHARACTER, as Go's encoding/json reads it):
 * the same six bytes, so the text is fixed in a copy of the same length, made only when one
 * occurs. Any thread; no state.
 */
#ifndef SOMA_CORE_JSON_PY_H
#define SOMA_CORE_JSON_PY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Rewrites, in place, each lone surrogate escape of text[0..len) as \ufffd (escapes are found as
 * jansson finds them: after an escaped backslash, "\\ud800" is no escape). Returns how many. */
size_t json_py_fix_surrogates(char *text, size_t len);
/* json_loadb(text, len, flags | JSON_ALLOW_NUL, error) of the text with its lone surrogate
 * escapes read as U+FFFD. New reference (caller decrefs); NULL as json_loadb. */
json_t *json_py_load(const char *text, size_t len, size_t flags, json_error_t *error);
/* s is a string holding U+0000 (json_string_value would give it cut short). */
bool json_py_has_nul(const json_t *s);

/* Python's repr of the exception type(*args) into buf (cap bytes, cut to fit): Exception('m5'),
 * ValueError('a', 2); args an array of the arguments, or one value, or NULL (none); a string
 * quoted as repr quotes it, any other value as its JSON. type NULL: Exception. */
void json_py_exc_repr(const char *type, const json_t *args, char *buf, size_t cap);

#endif
