/*
 * html_text.c - HTML to readable text with libxml2's HTML parser (see tools_int.h).
 *
 * DESIGN: the page is parsed (recovering from errors, no network, no error output) into a tree
 * that is walked depth first. Text nodes are written with white space folded to single spaces;
 * block elements end the line; script, style, noscript, template, svg, iframe and the head are
 * skipped, except the head's <title>, written first. The output is at most a little longer than
 * the input (one newline per element), so it is built in an open_memstream. libxml2 is
 * initialised once (xmlInitParser is not safe to race); parsing itself is thread-safe.
 */
#include <libxml/HTMLparser.h>
#include <libxml/parser.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tools/tools_int.h"

#define DEPTH_MAX 256 /* deeper trees (hostile pages) are cut there, and the cut reported */

struct out {
	FILE *f;      /* the text */
	bool space;   /* a space is owed before the next word */
	int newlines; /* newlines written at the end so far (0..2) */
	bool any;     /* a word was written */
	bool cut;     /* a subtree deeper than DEPTH_MAX was left out */
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init(void)
{
	xmlInitParser();
}

static bool named(const xmlNode *n, const char *const *names)
{
	for (; *names; names++)
		if (strcasecmp((const char *)n->name, *names) == 0)
			return true;
	return false;
}

static const char *const skipped[] = {"script", "style",  "noscript", "template", "svg",
				      "iframe", "object", "head",     NULL};
static const char *const blocks[] = {"p",	"div",	      "br",	    "li",      "ul",	  "ol",	     "h1",
				     "h2",	"h3",	      "h4",	    "h5",      "h6",	  "tr",	     "table",
				     "section", "article",    "header",	    "footer",  "nav",	  "aside",   "main",
				     "pre",	"blockquote", "hr",	    "dl",      "dt",	  "dd",	     "form",
				     "title",	"figure",     "figcaption", "address", "details", "summary", NULL};

static void newline(struct out *o, int want)
{
	o->space = false;
	if (!o->any)
		return;
	while (o->newlines < want) {
		fputc('\n', o->f);
		o->newlines++;
	}
}

static void text(struct out *o, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
			o->space = o->any && o->newlines == 0;
			continue;
		}
		if (o->space)
			fputc(' ', o->f);
		fputc(c, o->f);
		o->space = false;
		o->newlines = 0;
		o->any = true;
	}
}

static void walk(struct out *o, const xmlNode *n, int depth)
{
	if (n && depth >= DEPTH_MAX)
		o->cut = true;
	for (; n && depth < DEPTH_MAX; n = n->next) {
		if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
			if (n->content)
				text(o, (const char *)n->content);
			continue;
		}
		if (n->type != XML_ELEMENT_NODE || named(n, skipped))
			continue;
		bool block = named(n, blocks);
		if (block)
			newline(o, 1);
		walk(o, n->children, depth + 1);
		if (block)
			newline(o, strcasecmp((const char *)n->name, "p") == 0 ? 2 : 1);
	}
}

/* The <title> of the head, written as the first line. */
static void title(struct out *o, const xmlNode *n, int depth)
{
	for (; n && depth < 8; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (strcasecmp((const char *)n->name, "title") == 0) {
			walk(o, n->children, depth + 1);
			newline(o, 2);
			return;
		}
		title(o, n->children, depth + 1);
	}
}

char *html_to_text(const char *html, size_t len, const char *charset, bool *cut)
{
	pthread_once(&init_once, init);
	char *buf = NULL;
	size_t n = 0;
	struct out o = {.f = open_memstream(&buf, &n)};
	if (!o.f)
		return NULL;
	/* XML_PARSE_HUGE: without it libxml2 stops at depth 256 and drops the rest of the page */
	int opts = HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET | XML_PARSE_HUGE;
	htmlDocPtr doc = len <= (size_t)0x7fffffff ? htmlReadMemory(html, (int)len, NULL, charset, opts) : NULL;
	if (doc) {
		const xmlNode *root = xmlDocGetRootElement(doc);
		title(&o, root, 0);
		walk(&o, root, 0);
		xmlFreeDoc(doc);
	}
	if (fclose(o.f) != 0) {
		free(buf);
		return NULL;
	}
	while (n > 0 && buf[n - 1] == '\n') /* no trailing blank lines */
		buf[--n] = '\0';
	if (cut)
		*cut = o.cut;
	return buf;
}
