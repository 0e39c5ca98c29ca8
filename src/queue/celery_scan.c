/*
 * celery_scan.c - the fast reader of a Celery protocol v2 envelope (celery_envelope_scan in
 * celery_wire.h): the fields a worker needs, read straight from the text, without the jansson
 * tree of the envelope's ~50 values (building and freeing that tree per message was half of a
 * worker's CPU).
 *
 * DESIGN: two steps over the text (json_scan.c), and one allocation for the strings kept.
 * 1. check: the whole text is validated as JSON at least as strictly as jansson's json_loadb
 *    reads it (see json_scan.h), and the members of the envelope, its headers, properties and
 *    delivery_info are noted on the way (the tape);
 * 2. read: the wanted members from the tape, and the base64-decoded body [args, kwargs, embed],
 *    checked the same way and walked. A key seen twice counts its last value, as in jansson.
 * The reader says only "read" or "not mine". Whatever it does not read exactly as the jansson
 * reader (celery_wire.c) does is left to that reader, which accepts it or says why not: a text
 * that fails the check (among them \u0000 and lone surrogate escapes, which that reader reads as
 * Python wrote them, core/json_py.h), a v1 or non-string body, a typed {"__type__", "__value__"} object where a
 * header is read (untyping could change it), an escaped key, a compression header, an unknown
 * content type, a message without task or id. Malformed messages are thus refused by one reader
 * with one set of reasons; the unit tests and the fuzz harness hold both to the same reading.
 * args, kwargs, a non-empty embed and soma_payload are still handed out as jansson values,
 * parsed from their own spans and untyped ([] and {} without parsing).
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_scan.h"
#include "queue/celery_wire.h"

#define SCAN_BODY_BUF 4096 /* bodies up to this size are decoded on the stack */

/* ---- the envelope ---------------------------------------------------------------------------- */

#define AT(f) offsetof(struct fields, f)

struct fields {
	struct jspan body, ctype, headers, props;			      /* envelope */
	struct jspan task, id, retries, eta, expires, timelimit, compression; /* headers */
	struct jspan payload, tenant, session, max_retries, traceparent;      /* our headers (+ W3C) */
	struct jspan root, parent, argsrepr, kwargsrepr, ignore, shadow;      /* events; ignore_result */
	struct jspan corr, tag, prio, benc, dinfo;			      /* properties */
	struct jspan rk, exch;						      /* delivery_info */
};

static const struct jwant top[] = {
	{"body", AT(body)}, {"content-type", AT(ctype)}, {"headers", AT(headers)}, {"properties", AT(props)}};
static const struct jwant hdr[] = {{"task", AT(task)},
				   {"id", AT(id)},
				   {"retries", AT(retries)},
				   {"eta", AT(eta)},
				   {"expires", AT(expires)},
				   {"timelimit", AT(timelimit)},
				   {"compression", AT(compression)},
				   {"soma_payload", AT(payload)},
				   {"soma_tenant", AT(tenant)},
				   {"soma_session", AT(session)},
				   {"soma_max_retries", AT(max_retries)},
				   {"traceparent", AT(traceparent)},
				   {"root_id", AT(root)},
				   {"parent_id", AT(parent)},
				   {"argsrepr", AT(argsrepr)},
				   {"kwargsrepr", AT(kwargsrepr)},
				   {"ignore_result", AT(ignore)},
				   {"shadow", AT(shadow)}};
static const struct jwant prop[] = {{"correlation_id", AT(corr)},
				    {"delivery_tag", AT(tag)},
				    {"priority", AT(prio)},
				    {"body_encoding", AT(benc)},
				    {"delivery_info", AT(dinfo)}};
static const struct jwant dinfo[] = {{"routing_key", AT(rk)}, {"exchange", AT(exch)}};

/* The header values read here: a typed object among them is left to the jansson reader. */
static bool plain_headers(const struct fields *f)
{
	const struct jspan *v[] = {&f->task,	  &f->id,     &f->retries,  &f->eta,	     &f->expires,
				   &f->timelimit, &f->tenant, &f->session,  &f->max_retries, &f->traceparent,
				   &f->root,	  &f->parent, &f->argsrepr, &f->kwargsrepr,  &f->shadow};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (jscan_is(*v[i], '{'))
			return false;
	if (jscan_is(f->timelimit, '[')) {
		const char *p = f->timelimit.p, *e = p + f->timelimit.n;
		struct jspan k, x;
		while (jscan_next(&p, e, false, &k, &x))
			if (jscan_is(x, '{'))
				return false;
	}
	return true;
}

/* An array or object of the body as jansson reads and untypes it; [] / {} when it is not one. */
static json_t *body_value(struct jspan v, bool array)
{
	json_t *out = NULL;
	if (v.p && (*v.p == '[' || *v.p == '{')) {
		const char *in = jscan_ws(v.p + 1, v.p + v.n);
		if (*in != ']' && *in != '}')
			out = celery_json_untype(json_loadb(v.p, v.n, 0, NULL));
	}
	if (array ? json_is_array(out) : json_is_object(out))
		return out;
	json_decref(out);
	return array ? json_array() : json_object();
}

/* The embed when any of its members is not null (the jansson value, untyped), else NULL. */
static json_t *embed_value(struct jspan v)
{
	if (!jscan_is(v, '{'))
		return NULL;
	const char *p = v.p, *e = v.p + v.n;
	struct jspan k, x;
	bool any = false;
	while (jscan_next(&p, e, true, &k, &x))
		any |= !(x.n == 4 && memcmp(x.p, "null", 4) == 0);
	if (!any)
		return NULL;
	json_t *embed = celery_json_untype(json_loadb(v.p, v.n, 0, NULL));
	return json_is_object(embed) ? celery_embed_or_null(embed) : (json_decref(embed), NULL);
}

/* The body: base64 (or raw) text decoded, checked as JSON, [args, kwargs, embed] read. */
static bool read_body(const struct fields *f, char *strs, struct celery_msg *m)
{
	char stack[SCAN_BODY_BUF], *raw = strs, *heap = NULL, *text;
	size_t len;
	jscan_str(f->body, &raw); /* the body string, unescaped, at strs (later strings overwrite it) */
	len = strlen(strs);
	if (jscan_equals(f->benc, "base64")) {
		if (len % 4 != 0 || len > (size_t)1 << 30)
			return false;
		text = len / 4 * 3 + 1 <= sizeof(stack) ? stack : (heap = malloc(len / 4 * 3 + 1));
		int n = text && len ? EVP_DecodeBlock((unsigned char *)text, (const unsigned char *)strs, (int)len) : 0;
		if (!text || n < 0) {
			free(heap);
			return false;
		}
		for (size_t i = len; i > 0 && strs[i - 1] == '='; i--)
			n--; /* EVP_DecodeBlock counts the padding as zero bytes */
		len = (size_t)n;
	} else {
		text = strs;
	}
	bool ok = jscan_check(text, len, true, NULL) && jscan_ws(text, text + len)[0] == '[';
	if (ok) {
		const char *p = jscan_ws(text, text + len), *e = text + len;
		struct jspan k, x, item[3] = {{0}};
		for (int i = 0; i < 3 && jscan_next(&p, e, false, &k, &x); i++)
			item[i] = x;
		m->args = body_value(item[0], true);
		m->kwargs = body_value(item[1], false);
		m->embed = embed_value(item[2]);
		ok = m->args && m->kwargs;
	}
	free(heap);
	return ok;
}

bool celery_id_ok(const char *id)
{
	size_t chars = 0, n = 0;
	for (; id && id[n] && n <= CELERY_ID_BYTES; n++)
		chars += ((unsigned char)id[n] & 0xC0) != 0x80; /* a continuation byte is no new character */
	return chars > 0 && chars <= CELERY_ID_MAX && n <= CELERY_ID_BYTES;
}

bool celery_envelope_scan(const char *text, size_t len, struct celery_msg *out)
{
	struct fields f = {0};
	struct jtape t;
	memset(out, 0, sizeof(*out));
	const char *s = jscan_ws(text, text + len);
	if (!jscan_check(text, len, false, &t) || *s != '{')
		return false;
	if (!jscan_members(&t, true, (struct jspan){s, len - (size_t)(s - text)}, top, 4, &f) ||
	    !jscan_is(f.headers, '{') || !jscan_is(f.body, '"') ||
	    (jscan_is(f.ctype, '"') && !jscan_equals(f.ctype, "application/json")))
		return false;
	if (jscan_is(f.props, '{') && !jscan_members(&t, false, f.props, prop, 5, &f))
		return false;
	if (!jscan_members(&t, false, f.headers, hdr, sizeof(hdr) / sizeof(hdr[0]), &f) || f.compression.p ||
	    !jscan_is(f.task, '"') || !plain_headers(&f) ||
	    (jscan_is(f.dinfo, '{') && !jscan_members(&t, false, f.dinfo, dinfo, 2, &f)))
		return false;
	if (jscan_is(f.benc, '"') && memchr(f.benc.p, '\\', f.benc.n)) /* it could spell base64 */
		return false;
	/* every string kept is at most its raw length; the body is decoded in the same buffer first */
	size_t cap = f.body.n + 16;
	const struct jspan *keep[] = {&f.task,	 &f.id,	      &f.corr,	     &f.tag,	 &f.rk,		 &f.exch,
				      &f.tenant, &f.session,  &f.eta,	     &f.expires, &f.traceparent, &f.root,
				      &f.parent, &f.argsrepr, &f.kwargsrepr, &f.shadow};
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		cap += keep[i]->n + 1;
	char *strs = malloc(cap), *o;
	out->text = text, out->len = len, out->strs = strs;
	if (!strs || !read_body(&f, strs, out))
		goto not_mine;
	o = strs;
	out->task = jscan_str(f.task, &o);
	out->id = jscan_is(f.id, '"') ? jscan_str(f.id, &o) : jscan_str(f.corr, &o);
	if (!out->task[0] || !out->id || !celery_id_ok(out->id))
		goto not_mine;
	out->delivery_tag = jscan_is(f.tag, '"') ? jscan_str(f.tag, &o) : "";
	out->routing_key = jscan_str(f.rk, &o);
	out->exchange = jscan_is(f.exch, '"') ? jscan_str(f.exch, &o) : "";
	out->tenant = jscan_str(f.tenant, &o);
	out->session = jscan_str(f.session, &o);
	out->traceparent = jscan_str(f.traceparent, &o);
	int64_t prio = jscan_int(f.prio);
	out->priority = prio < 0 ? 0 : prio > 9 ? 9 : (int)prio;
	out->retries = jscan_int(f.retries);
	out->ignore_result = f.ignore.p && f.ignore.n == 4 && memcmp(f.ignore.p, "true", 4) == 0;
	const char *eta = jscan_str(f.eta, &o), *expires = jscan_str(f.expires, &o);
	out->eta_text = eta, out->expires_text = expires;
	out->root_id = jscan_str(f.root, &o);
	out->parent_id = jscan_str(f.parent, &o);
	out->argsrepr = jscan_str(f.argsrepr, &o);
	out->kwargsrepr = jscan_str(f.kwargsrepr, &o);
	out->shadow = jscan_str(f.shadow, &o);
	if (eta && !celery_time_parse(eta, &out->eta_ms))
		out->eta_ms = 0;
	if (expires && !celery_time_parse(expires, &out->expires_ms))
		out->expires_ms = 0;
	if (jscan_is(f.timelimit, '[')) {
		const char *p = f.timelimit.p, *e = p + f.timelimit.n;
		struct jspan k, lim[2] = {{0}};
		for (int i = 0; i < 2 && jscan_next(&p, e, false, &k, &lim[i]); i++)
			;
		out->time_limit = jscan_num(lim[0]);
		out->soft_time_limit = jscan_num(lim[1]);
	}
	out->has_max_retries = jscan_is_int(f.max_retries);
	out->max_retries = jscan_int(f.max_retries);
	if (jscan_is(f.payload, '{')) {
		out->payload = celery_json_untype(json_loadb(f.payload.p, f.payload.n, 0, NULL));
		if (!json_is_object(out->payload))
			json_decref(out->payload), out->payload = NULL;
	}
	return true;
not_mine:
	celery_msg_deinit(out);
	return false;
}
