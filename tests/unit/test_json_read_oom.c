/*
 * test_json_read_oom.c - json_read (src/core/json_read.c) when memory runs out: it says so
 * (json_error_out_of_memory) and never hands the text to json_loadb, whose string reader retries a
 * failed allocation per byte and then reads and writes past its buffer (jansson 2.14).
 *
 * DESIGN: the failure is injected through jansson's allocator (json_set_alloc_funcs): every
 * allocation of at least `refuse_from` bytes fails, as under an address-space limit where small
 * blocks still come and a large one does not. Each test restores the default allocator.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_read.h"

static size_t refuse_from = (size_t)-1; /* allocations this large fail */

static void *picky_malloc(size_t n)
{
	return n >= refuse_from ? NULL : malloc(n);
}

static void refuse_large(size_t from)
{
	refuse_from = from;
	json_set_alloc_funcs(picky_malloc, free);
}

static void allocator_back(void)
{
	json_set_alloc_funcs(malloc, free);
	refuse_from = (size_t)-1;
}

/* {"message":"xxx..."} with a string of n bytes; caller frees. */
static char *big_body(size_t n, size_t *len)
{
	const char *head = "{\"message\":\"", *tail = "\"}";
	*len = strlen(head) + n + strlen(tail);
	char *t = malloc(*len + 1);
	cr_assert_not_null(t);
	memcpy(t, head, strlen(head));
	memset(t + strlen(head), 'x', n);
	memcpy(t + strlen(head) + n, tail, strlen(tail) + 1);
	return t;
}

Test(json_read_oom, a_string_that_does_not_fit_is_out_of_memory, .fini = allocator_back)
{
	size_t len;
	char *text = big_body(1 << 20, &len);
	refuse_large(64 * 1024);
	json_error_t e;
	json_t *v = json_read(text, len, JSON_REJECT_DUPLICATES, &e);
	allocator_back();
	cr_assert_null(v);
	cr_assert_eq(json_error_code(&e), json_error_out_of_memory, "error: %s", e.text);
	cr_assert(json_read_out_of_memory(&e));
	free(text);
}

Test(json_read_oom, any_allocation_failing_is_out_of_memory, .fini = allocator_back)
{
	const char *text = "{\"a\":[1,2,{\"b\":\"c\"}],\"d\":\"e\"}";
	refuse_large(0);
	json_error_t e;
	json_t *v = json_read(text, strlen(text), 0, &e);
	allocator_back();
	cr_assert_null(v);
	cr_assert(json_read_out_of_memory(&e), "error: %s", e.text);
}

Test(json_read_oom, a_large_text_it_cannot_read_is_refused_without_jansson, .fini = allocator_back)
{
	size_t len;
	char *text = big_body(1 << 20, &len);
	text[len - 1] = ','; /* not JSON: its error must not come from json_loadb (which would need a
			      * 1 MB string buffer, refused here) */
	refuse_large(64 * 1024);
	json_error_t e;
	json_t *v = json_read(text, len, 0, &e);
	allocator_back();
	cr_assert_null(v);
	cr_assert(!json_read_out_of_memory(&e), "not JSON is not out of memory: %s", e.text);
	cr_assert(strlen(e.text) > 0);
	free(text);
}

Test(json_read_oom, a_small_bad_text_keeps_jansson_error)
{
	const char *text = "{\"bad\":}";
	json_error_t e, want;
	cr_assert_null(json_loadb(text, strlen(text), 0, &want));
	cr_assert_null(json_read(text, strlen(text), 0, &e));
	cr_assert_str_eq(e.text, want.text);
	cr_assert_eq(e.column, want.column);
	cr_assert(!json_read_out_of_memory(&e));
}
