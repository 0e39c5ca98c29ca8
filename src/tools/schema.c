/*
 * schema.c - checking a tool's arguments against its JSON Schema (tools_args_check, tools.h).
 *
 * DESIGN: only the subset the built-in tools' schemas use, checked one level deep: the
 * arguments are an object; every name in "required" is present; each property present has the
 * "type" its schema names (integer is a JSON integer; number any number), a string's length in
 * characters (code points, as JSON Schema counts) is within "maxLength", a number within
 * "minimum"/"maximum"; with "additionalProperties": false no other name is allowed. The first
 * problem found is the answer, phrased for the caller who sent the arguments (an API client or
 * the model): "args.url is required". Pure; any thread.
 */
#include <stdio.h>
#include <string.h>

#include "tools/tools.h"

static const char *type_of(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
		return "integer";
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	default:
		return "null";
	}
}

static bool type_fits(const char *want, const json_t *v)
{
	if (!want)
		return true;
	if (strcmp(want, "number") == 0)
		return json_is_number(v);
	return strcmp(want, type_of(v)) == 0;
}

static size_t chars(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xC0) != 0x80;
	return c;
}

/* One property's value against its schema; false with why written. */
static bool check_value(const char *name, const json_t *schema, const json_t *v, char *why, size_t cap)
{
	const char *want = json_string_value(json_object_get(schema, "type"));
	if (!type_fits(want, v)) {
		snprintf(why, cap, "args.%s must be %s %s, not %s", name, strchr("aeiou", want[0]) ? "an" : "a", want,
			 type_of(v));
		return false;
	}
	json_t *max_len = json_object_get(schema, "maxLength"), *min = json_object_get(schema, "minimum"),
	       *max = json_object_get(schema, "maximum"), *min_len = json_object_get(schema, "minLength");
	if (json_is_string(v)) {
		size_t n = chars(json_string_value(v), json_string_length(v));
		if (json_is_integer(max_len) && n > (size_t)json_integer_value(max_len)) {
			snprintf(why, cap, "args.%s is longer than %lld characters (it has %zu)", name,
				 (long long)json_integer_value(max_len), n);
			return false;
		}
		if (json_is_integer(min_len) && n < (size_t)json_integer_value(min_len)) {
			snprintf(why, cap, "args.%s must have at least %lld characters", name,
				 (long long)json_integer_value(min_len));
			return false;
		}
	}
	if (json_is_number(v) && ((json_is_number(min) && json_number_value(v) < json_number_value(min)) ||
				  (json_is_number(max) && json_number_value(v) > json_number_value(max)))) {
		snprintf(why, cap, "args.%s must be within %g..%g", name,
			 json_is_number(min) ? json_number_value(min) : -1e308,
			 json_is_number(max) ? json_number_value(max) : 1e308);
		return false;
	}
	return true;
}

bool tools_args_check(const struct tool_def *t, const json_t *args, char *why, size_t cap)
{
	json_t *schema = tools_schema(t), *props = json_object_get(schema, "properties"), *v, *name;
	const char *key;
	size_t i;
	if (!schema) {
		snprintf(why, cap, "the tool %s has no valid parameter schema", t ? t->name : "(none)");
		return false;
	}
	if (args && !json_is_object(args)) {
		snprintf(why, cap, "args must be an object, not %s", type_of(args));
		return false;
	}
	json_array_foreach(json_object_get(schema, "required"), i, name)
	{
		if (!json_object_get(args, json_string_value(name))) {
			snprintf(why, cap, "args.%s is required", json_string_value(name));
			return false;
		}
	}
	bool closed = json_is_false(json_object_get(schema, "additionalProperties"));
	json_object_foreach((json_t *)args, key, v)
	{
		json_t *ps = json_object_get(props, key);
		if (!ps && closed) {
			snprintf(why, cap, "args.%s is not a parameter of %s (it takes: %s)", key, t->name,
				 json_object_size(props) ? "see GET /v1/tools" : "no arguments");
			return false;
		}
		if (ps && !check_value(key, ps, v, why, cap))
			return false;
	}
	return true;
}
