/*
 * json_out.h - compact JSON text of a jansson value, the same bytes as json_dumps(v, JSON_COMPACT)
 * at a fraction of its cost.
 *
 * DESIGN: jansson's dump calls a callback per run of plain characters and decodes every string one
 * UTF-8 character at a time through a function call; a chat message costs several dumps (its
 * event, each delta, the provider's request with the whole context). json_out writes into one
 * growing buffer and checks and copies strings a run at a time. Its output equals json_dumps's
 * with JSON_COMPACT (members in insertion order, "\uXXXX" in upper-case hex for the control
 * characters without a short escape, non-ASCII kept as UTF-8) and it fails where json_dumps fails
 * (a string that is not valid UTF-8, which only a *_nocheck setter can make; for such a key
 * json_dumps writes broken JSON, json_out refuses). Reals are rare on
 * these paths and are formatted by jansson itself. Any thread; no state.
 */
#ifndef SOMA_CORE_JSON_OUT_H
#define SOMA_CORE_JSON_OUT_H

#include <jansson.h>
#include <stddef.h>

#define JSON_OUT_MAX   (256u << 20) /* longest text json_out builds (bytes); longer is an error */
#define JSON_OUT_DEPTH 2048	    /* deepest nesting it writes (jansson's own parse limit) */

/* json_dumps(v, JSON_COMPACT) for an object or array v (with any: any value, as JSON_ENCODE_ANY).
 * Returns malloc'd NUL-terminated text, freed by the caller with free(); its length in *len when
 * len is not NULL. NULL when v is NULL, not a container without any, holds a string that is not
 * valid UTF-8, nests deeper than JSON_OUT_DEPTH, is longer than JSON_OUT_MAX, or memory ran out. */
char *json_out(const json_t *v, int any, size_t *len);
/* s[0..n) as a JSON string literal, quotes included: the bytes json_out writes for
 * json_stringn(s, n). Returns malloc'd NUL-terminated text (freed by the caller), its length in
 * *len when len is not NULL; NULL when s is NULL or not valid UTF-8, the text would be longer
 * than JSON_OUT_MAX, or memory ran out. */
char *json_out_string(const char *s, size_t n, size_t *len);

#endif
