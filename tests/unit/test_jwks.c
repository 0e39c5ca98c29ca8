/*
 * test_jwks.c - the JWKS key set and its refresh thread (src/identity/jwks.c): documents, key
 * choice by kid and type, rotation, the rate limit on refreshes, and every way a fetch can fail.
 * Single keys (JWK -> PEM, refusals) are test_jwk.c's.
 *
 * DESIGN: the JWKS is served by a tiny HTTP server on a thread of this test (a static document,
 * a status code, or a connection that never answers), so the real libcurl fetch path runs.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "helpers.h"
#include "identity/jwt_int.h"
#include "jwt_helpers.h"

/* ---- the JWKS server ------------------------------------------------------------------------- */

static struct {
	int fd, port;	      /* listening socket */
	pthread_t tid;	      /* serving thread */
	atomic_bool stop;     /* ends the thread */
	atomic_int hits;      /* requests served */
	pthread_mutex_t lock; /* guards body and status */
	char *body;	      /* the document (malloc'd) */
	int status;	      /* 200, 500 ...; 0: never answer */
	atomic_bool late;     /* answer only once the client has closed its end */
	atomic_bool left;     /* a late answer saw the client close first */
	atomic_int refused;   /* answers the client was no longer there to take */
} srv = {.fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

/* Waits until the client closes c (true) or the test stops the server (false). */
static bool client_leaves(int c)
{
	char b[64];
	for (;;) {
		struct pollfd p = {c, POLLIN, 0};
		if (poll(&p, 1, 20) == 1 && read(c, b, sizeof(b)) <= 0)
			return true; /* looked at before stop: a close that came first is always seen */
		if (atomic_load(&srv.stop))
			return false;
	}
}

static void serve_one(int c)
{
	char req[4096];
	size_t got = 0;
	while (got < sizeof(req) - 1 && !memmem(req, got, "\r\n\r\n", 4)) {
		ssize_t n = read(c, req + got, sizeof(req) - 1 - got);
		if (n <= 0)
			return;
		got += (size_t)n;
	}
	atomic_fetch_add(&srv.hits, 1);
	pthread_mutex_lock(&srv.lock);
	int status = srv.status;
	char *body = strdup(srv.body ? srv.body : "");
	pthread_mutex_unlock(&srv.lock);
	while (status == 0 && !atomic_load(&srv.stop))
		usleep(10000); /* a server that never answers */
	if (atomic_load(&srv.late))
		atomic_store(&srv.left, client_leaves(c));
	char head[256];
	int hn = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			  status, strlen(body));
	/*
	 * send(MSG_NOSIGNAL), not write: the answer to a client that has left (a fetch jwks_stop cut
	 * short) fails with EPIPE, and with write() that EPIPE came with a SIGPIPE that killed the
	 * whole test process: the rare "crashed during its setup or teardown" of
	 * keys_chosen_by_kid_and_type. stop_closes_the_connection_of_the_fetch_it_cuts_short makes
	 * that case certain.
	 */
	if (status && (send(c, head, (size_t)hn, MSG_NOSIGNAL) != hn ||
		       send(c, body, strlen(body), MSG_NOSIGNAL) != (ssize_t)strlen(body)))
		atomic_fetch_add(&srv.refused, 1);
	free(body);
}

static void *serve(void *arg)
{
	(void)arg;
	while (!atomic_load(&srv.stop)) {
		struct pollfd p = {srv.fd, POLLIN, 0};
		if (poll(&p, 1, 20) != 1)
			continue;
		int c = accept(srv.fd, NULL, NULL);
		if (c >= 0) {
			serve_one(c);
			close(c);
		}
	}
	return NULL;
}

static void server_set(int status, const char *body)
{
	pthread_mutex_lock(&srv.lock);
	free(srv.body);
	srv.body = strdup(body);
	srv.status = status;
	pthread_mutex_unlock(&srv.lock);
}

static void server_start(int status, const char *body)
{
	server_set(status, body);
	srv.fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert_eq(bind(srv.fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(srv.fd, 16), 0);
	cr_assert_eq(getsockname(srv.fd, (struct sockaddr *)&a, &len), 0);
	srv.port = ntohs(a.sin_port);
	atomic_store(&srv.stop, false);
	atomic_store(&srv.hits, 0);
	atomic_store(&srv.left, false);
	atomic_store(&srv.refused, 0);
	cr_assert_eq(pthread_create(&srv.tid, NULL, serve, NULL), 0);
}

static int fetch_timeout_ms; /* jwt_config.jwks_fetch_timeout_ms of init_jwks; 0: the default */

static void setup(void)
{
	fetch_timeout_ms = 0;
	log_setup((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT);
}

/* Ends the server thread and closes its socket; a no-op when it is not running. */
static void server_stop(void)
{
	atomic_store(&srv.stop, true);
	if (srv.fd >= 0) {
		pthread_join(srv.tid, NULL);
		close(srv.fd);
		srv.fd = -1;
	}
}

static void teardown(void)
{
	atomic_store(&srv.stop, true); /* first: a fetch stuck on the server must end */
	jwt_auth_deinit();
	server_stop();
	atomic_store(&srv.late, false);
	free(srv.body);
	srv.body = NULL;
}

TestSuite(jwks, .init = setup, .fini = teardown);

/* Starts JWT verification on the test server's JWKS; waits up to wait_ms for the first fetch. */
static void init_jwks(int wait_ms)
{
	char url[64], why[256] = "";
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/jwks.json", srv.port);
	struct jwt_config c = {.secret = "",
			       .public_key_path = "",
			       .jwks_url = url,
			       .jwks_refresh_s = 300,
			       .jwks_wait_ms = wait_ms,
			       .jwks_fetch_timeout_ms = fetch_timeout_ms,
			       .issuer = "",
			       .audience = "",
			       .leeway_s = 0,
			       .tenant_claims = "tenant"};
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_OK, "%s", why);
}

/* {"keys": [jwk...]} of the given JWKs (consumed). Caller frees. */
static char *jwks_doc(json_t *a, json_t *b, json_t *c)
{
	json_t *keys = json_array();
	json_t *all[] = {a, b, c};
	for (int i = 0; i < 3; i++)
		if (all[i])
			json_array_append_new(keys, all[i]);
	json_t *doc = json_pack("{s:o}", "keys", keys);
	char *text = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return text;
}

static enum jwt_verdict verify_signed(EVP_PKEY *k, const char *alg, const char *kid)
{
	char priv[4096];
	test_key_pem(k, true, priv, sizeof(priv));
	char *claims = test_claims("{}");
	char *t = test_token(alg, priv, strlen(priv), kid, claims, NULL);
	struct identity who;
	enum jwt_verdict v = jwt_auth_verify(t, strlen(t), &who);
	free(t);
	free(claims);
	return v;
}

/* ---- documents ------------------------------------------------------------------------------- */

Test(jwks, documents)
{
	EVP_PKEY *ec = test_key_new("P-256");
	struct jwt_key keys[2];
	size_t n = 9;
	char why[200];
	cr_assert_eq(jwks_parse("nope", 4, keys, 2, &n, why, sizeof(why)), SOMA_ERR_INVALID);
	cr_assert_eq(n, 0);
	cr_assert_eq(jwks_parse("{\"keys\": {}}", 12, keys, 2, &n, why, sizeof(why)), SOMA_ERR_INVALID);
	const char *oct = "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}";
	cr_assert_eq(jwks_parse(oct, strlen(oct), keys, 2, &n, why, sizeof(why)), SOMA_ERR_INVALID);
	cr_assert_not_null(strstr(why, "no usable key"), "%s", why);
	char *doc = jwks_doc(json_pack("{s:s}", "kty", "oct"), test_jwk(ec, "a"), test_jwk(ec, "b"));
	cr_assert_eq(jwks_parse(doc, strlen(doc), keys, 2, &n, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(n, 2, "the oct key is skipped");
	cr_assert_str_eq(keys[1].kid, "b");
	cr_assert_eq(jwks_parse(doc, strlen(doc), keys, 1, &n, why, sizeof(why)), SOMA_OK);
	cr_assert_eq(n, 1, "at most max keys");
	free(doc);
	EVP_PKEY_free(ec);
}

/* ---- the key set and its thread ------------------------------------------------------------- */

Test(jwks, keys_chosen_by_kid_and_type)
{
	EVP_PKEY *rsa = test_key_new("RSA"), *ec = test_key_new("P-256"), *ec2 = test_key_new("P-256");
	json_t *pinned = test_jwk(rsa, "rsa-384");
	json_object_set_new(pinned, "alg", json_string("RS384"));
	char *doc = jwks_doc(test_jwk(rsa, "rsa-1"), test_jwk(ec, "ec-1"), pinned);
	server_start(200, doc);
	init_jwks(3000);
	char d[300];
	cr_assert(jwt_auth_describe(d, sizeof(d)), "%s", d);
	cr_assert_not_null(strstr(d, "JWKS 3 key(s)"), "%s", d);
	cr_assert_eq(verify_signed(rsa, "RS256", "rsa-1"), JWT_OK);
	cr_assert_eq(verify_signed(ec, "ES256", "ec-1"), JWT_OK);
	cr_assert_eq(verify_signed(ec, "ES256", NULL), JWT_OK, "no kid, one EC key");
	cr_assert_eq(verify_signed(rsa, "RS256", NULL), JWT_NO_KID, "no kid, two RSA keys");
	cr_assert_eq(verify_signed(ec, "ES256", "rsa-1"), JWT_KEY_MISMATCH);
	cr_assert_eq(verify_signed(rsa, "RS256", "rsa-384"), JWT_KEY_MISMATCH, "the JWK pins RS384");
	cr_assert_eq(verify_signed(rsa, "RS384", "rsa-384"), JWT_OK);
	cr_assert_eq(verify_signed(ec2, "ES256", "ec-1"), JWT_BAD_SIGNATURE);
	/* this unknown kid asks for a refresh, which teardown's jwks_stop may cut short */
	cr_assert_eq(verify_signed(ec2, "ES256", "ec-2"), JWT_UNKNOWN_KID);
	free(doc);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(ec2);
}

/* RFC 7517 4.5: keys of different types may share a kid; the token's alg tells which it means */
Test(jwks, one_kid_for_keys_of_two_types)
{
	EVP_PKEY *rsa = test_key_new("RSA"), *ec = test_key_new("P-256");
	char *doc = jwks_doc(test_jwk(rsa, "same"), test_jwk(ec, "same"), NULL);
	server_start(200, doc);
	init_jwks(3000);
	cr_assert_eq(verify_signed(rsa, "RS256", "same"), JWT_OK);
	cr_assert_eq(verify_signed(ec, "ES256", "same"), JWT_OK, "the EC key of the shared kid");
	free(doc);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
}

Test(jwks, rotation_and_the_refresh_rate_limit)
{
	EVP_PKEY *old = test_key_new("P-256"), *fresh = test_key_new("P-256");
	char *doc = jwks_doc(test_jwk(old, "old"), NULL, NULL);
	server_start(200, doc);
	free(doc);
	init_jwks(3000);
	cr_assert_eq(verify_signed(old, "ES256", "old"), JWT_OK);
	cr_assert_eq(atomic_load(&srv.hits), 1);
	doc = jwks_doc(test_jwk(fresh, "new"), NULL, NULL); /* the issuer rotates */
	server_set(200, doc);
	free(doc);
	cr_assert_eq(verify_signed(fresh, "ES256", "new"), JWT_UNKNOWN_KID, "answered at once, refresh asked");
	enum jwt_verdict v = JWT_UNKNOWN_KID;
	for (int i = 0; i < 300 && v != JWT_OK; i++) {
		usleep(10000);
		v = verify_signed(fresh, "ES256", "new");
	}
	cr_assert_eq(v, JWT_OK, "the new key arrives without a restart");
	cr_assert_eq(atomic_load(&srv.hits), 2);
	cr_assert_eq(verify_signed(old, "ES256", "old"), JWT_UNKNOWN_KID, "the old key is gone, cache too");
	usleep(300000);
	cr_assert_eq(atomic_load(&srv.hits), 2, "no second fetch within 10 s");
	EVP_PKEY_free(old);
	EVP_PKEY_free(fresh);
}

/* Starts on a server answering status with body; returns the health detail (static). */
static const char *failed_start(int status, const char *body)
{
	static char d[300];
	server_start(status, body);
	init_jwks(3000);
	cr_assert_not(jwt_auth_describe(d, sizeof(d)), "%s", d);
	cr_assert(jwt_auth_enabled(), "JWKS keys may still arrive");
	return d;
}

Test(jwks, fetch_refused_status)
{
	cr_assert_not_null(strstr(failed_start(500, "{}"), "HTTP status 500"));
}

Test(jwks, fetch_not_a_jwks)
{
	cr_assert_not_null(strstr(failed_start(200, "<html>"), "not a JWKS"));
}

Test(jwks, fetch_too_large)
{
	char *big = malloc(JWKS_DOC_MAX + 100);
	memset(big, ' ', JWKS_DOC_MAX + 99);
	big[JWKS_DOC_MAX + 99] = '\0';
	const char *d = failed_start(200, big);
	free(big);
	cr_assert_not_null(strstr(d, "larger than"), "%s", d);
}

Test(jwks, fetch_connection_refused_then_tokens_get_401)
{
	char why[256] = "";
	struct jwt_config c = {.secret = "",
			       .public_key_path = "",
			       .jwks_url = "http://127.0.0.1:1/jwks",
			       .jwks_refresh_s = 300,
			       .jwks_wait_ms = 3000,
			       .issuer = "",
			       .audience = "",
			       .leeway_s = 0,
			       .tenant_claims = "tenant"};
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_OK, "%s", why);
	char d[300];
	cr_assert_not(jwt_auth_describe(d, sizeof(d)));
	cr_assert_not_null(strstr(d, "not loaded"), "%s", d);
	EVP_PKEY *ec = test_key_new("P-256");
	cr_assert_eq(verify_signed(ec, "ES256", "k"), JWT_UNKNOWN_KID);
	cr_assert_eq(verify_signed(ec, "ES256", NULL), JWT_NO_KEY_FOR_ALG);
	EVP_PKEY_free(ec);
}

/* The server never answers and the fetch's own limit is ten minutes: only jwks_stop aborting
 * the transfer lets jwt_auth_deinit return before the test's timeout (a failure, not a race). */
Test(jwks, stop_aborts_a_fetch_that_hangs, .timeout = 60)
{
	server_start(0, "");
	fetch_timeout_ms = 600000;
	init_jwks(200); /* gives up waiting; the fetch goes on */
	for (int i = 0; i < 3000 && atomic_load(&srv.hits) == 0; i++)
		usleep(10000);
	cr_assert_eq(atomic_load(&srv.hits), 1, "the fetch reached the server");
	jwt_auth_deinit();
}

/*
 * The end of keys_chosen_by_kid_and_type, made certain: the server holds its answer until the
 * client has gone, so the fetch is in flight when jwks_stop cuts it short. Stopping must close
 * that connection (the thread's libcurl handle goes with the thread), and the answer the server
 * then sends meets a closed socket; the process must survive that EPIPE.
 */
Test(jwks, stop_closes_the_connection_of_the_fetch_it_cuts_short)
{
	atomic_store(&srv.late, true);
	server_start(200, "{\"keys\": []}");
	init_jwks(200); /* gives up waiting; the fetch goes on */
	for (int i = 0; i < 3000 && atomic_load(&srv.hits) == 0; i++)
		usleep(10000);
	cr_assert_eq(atomic_load(&srv.hits), 1, "the fetch reached the server");
	jwt_auth_deinit();
	server_stop(); /* after the client's close: the server sees it first */
	cr_assert(atomic_load(&srv.left), "jwks_stop returned with the fetch's connection still open");
	cr_assert_eq(atomic_load(&srv.refused), 1, "the late answer met a closed connection");
}
