/*
 * ids.c - see ids.h.
 */
#include "core/ids.h"

#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

enum soma_err ids_random_bytes(void *buf, size_t len)
{
	unsigned char *p = buf;
	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0)
			return SOMA_ERR_IO;
		p += n;
		len -= (size_t)n;
	}
	return SOMA_OK;
}

/* xoshiro-style generator state per thread; seeded lazily from the kernel. */
static __thread uint64_t rng_state[2];
static __thread int rng_seeded;

static uint64_t rng_next(void)
{
	if (!rng_seeded) {
		if (ids_random_bytes(rng_state, sizeof(rng_state)) != SOMA_OK)
			rng_state[0] = (uint64_t)(uintptr_t)&rng_state ^ 0x9e3779b97f4a7c15ull;
		rng_state[1] |= 1;
		rng_seeded = 1;
	}
	uint64_t s1 = rng_state[0];
	const uint64_t s0 = rng_state[1];
	uint64_t result = s0 + s1;
	rng_state[0] = s0;
	s1 ^= s1 << 23;
	rng_state[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
	return result;
}

uint32_t ids_random_u32(void)
{
	return (uint32_t)(rng_next() >> 32);
}

static const char hexdigits[] = "0123456789abcdef";

static void uuid_format(const unsigned char b[16], char out[IDS_UUID_LEN + 1]);

void ids_uuid4(char out[IDS_UUID_LEN + 1])
{
	unsigned char b[16];
	uint64_t a = rng_next(), c = rng_next();
	for (int i = 0; i < 8; i++) {
		b[i] = (unsigned char)(a >> (i * 8));
		b[8 + i] = (unsigned char)(c >> (i * 8));
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	uuid_format(b, out);
}

void ids_uuid7(char out[IDS_UUID_LEN + 1])
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	uint64_t r1 = rng_next(), r2 = rng_next();
	unsigned char b[16];
	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)(ms >> (40 - 8 * i));
	for (int i = 6; i < 8; i++)
		b[i] = (unsigned char)(r1 >> (i * 8));
	for (int i = 0; i < 8; i++)
		b[8 + i] = (unsigned char)(r2 >> (i * 8));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x70);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	uuid_format(b, out);
}

static void uuid_format(const unsigned char b[16], char out[IDS_UUID_LEN + 1])
{
	size_t o = 0;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hexdigits[b[i] >> 4];
		out[o++] = hexdigits[b[i] & 15];
	}
	out[o] = '\0';
}

enum soma_err ids_random_hex(char *out, size_t len)
{
	unsigned char buf[64];
	size_t need = (len + 1) / 2;
	if (need > sizeof(buf))
		return SOMA_ERR_INVALID;
	enum soma_err err = ids_random_bytes(buf, need);
	if (err != SOMA_OK)
		return err;
	for (size_t i = 0; i < len; i++)
		out[i] = hexdigits[(buf[i / 2] >> ((i & 1) ? 0 : 4)) & 15];
	out[len] = '\0';
	return SOMA_OK;
}

bool ids_request_id_valid(const char *s, size_t len)
{
	if (len == 0 || len > 128)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
			  c == '_' || c == ':' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}
