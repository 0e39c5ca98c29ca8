/*
 * test_bus_redis_script.c - the redis bus driver's batch script (bus_redis_lua, src/bus/redis_state.c)
 * run directly against a real redis-server the suite spawns on a free loopback port: a batch sent
 * again under its batch key runs once (a retry whose first reply was lost), and the generations
 * of a session are counted, so the end of one does not start the expiry of another's deltas.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus_int.h"

static pid_t redis_pid;
static redisContext *rc;

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void setup(void)
{
	int port = free_port();
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", port);
	redis_pid = fork();
	cr_assert(redis_pid >= 0);
	if (redis_pid == 0) {
		freopen("/dev/null", "w", stdout);
		execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
		       "--appendonly", "no", "--dir", "/tmp", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		rc = redisConnect("127.0.0.1", port);
		if (rc && !rc->err)
			return;
		redisFree(rc);
		rc = NULL;
		nanosleep(&(struct timespec){0, 10000000L}, NULL);
	}
	cr_assert_fail("redis-server did not start on port %d", port);
}

static void teardown(void)
{
	redisFree(rc);
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		waitpid(redis_pid, NULL, 0);
	}
}

TestSuite(bus_redis_script, .init = setup, .fini = teardown, .timeout = 30);

/* Runs the script on one record (kind key a b c d text) under batch key bkey; the reply. */
static redisReply *run(const char *bkey, const char *kind, const char *key, const char *a, const char *d,
		       const char *text)
{
	const char *argv[] = {"EVAL", bus_redis_lua, "0",  "1000", "600000", "100", "soma:bus:0", BUS_REDIS_PREFIX,
			      bkey,   "60000",	     kind, key,	   a,	     "-1",  "0",	  d,
			      text};
	redisReply *r = redisCommandArgv(rc, 17, argv, NULL);
	cr_assert(r && r->type == REDIS_REPLY_ARRAY, "the script failed: %s", r && r->str ? r->str : "no reply");
	return r;
}

static long long cmd_int(const char *fmt, const char *key)
{
	redisReply *r = redisCommand(rc, fmt, key);
	cr_assert(r && r->type == REDIS_REPLY_INTEGER);
	long long v = r->integer;
	freeReplyObject(r);
	return v;
}

Test(bus_redis_script, a_batch_sent_again_under_its_key_runs_once)
{
	redisReply *first = run("soma:bus:batch:n:1", "e", "t/s", "0", "0", "d1");
	cr_assert_eq(first->elements, 2);
	cr_assert(first->element[0]->integer == 0 && first->element[1]->integer == 1);
	redisReply *again = run("soma:bus:batch:n:1", "e", "t/s", "0", "0", "d1"); /* its reply was lost */
	cr_assert_eq(again->elements, 2, "the retry returns the cursors of the first run");
	cr_assert(again->element[0]->integer == 0 && again->element[1]->integer == 1);
	cr_assert_eq(cmd_int("LLEN %s", "soma:bus:t/s:l"), 1, "the retried delta is logged once");
	redisReply *next = run("soma:bus:batch:n:2", "e", "t/s", "0", "0", "d2");
	cr_assert(next->element[0]->integer == 0 && next->element[1]->integer == 2, "the next batch counts on");
	cr_assert_eq(cmd_int("LLEN %s", "soma:bus:t/s:l"), 2);
	freeReplyObject(first);
	freeReplyObject(again);
	freeReplyObject(next);
}

Test(bus_redis_script, the_end_of_one_generation_keeps_the_deltas_of_another)
{
	const char *steps[][2] = {{"b", ""}, {"e", "d1"}, {"b", ""}, {"e", "d2"}, {"x", ""}};
	char bkey[32];
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		snprintf(bkey, sizeof(bkey), "soma:bus:batch:g:%zu", i);
		freeReplyObject(run(bkey, steps[i][0], "t/g", "0", "0", steps[i][1]));
	}
	long long ttl = cmd_int("PTTL %s", "soma:bus:t/g:l");
	cr_assert_gt(ttl, 1000, "one of two generations ended: the other's deltas expire already (PTTL %lld)", ttl);
	freeReplyObject(run("soma:bus:batch:g:x2", "x", "t/g", "0", "0", ""));
	ttl = cmd_int("PTTL %s", "soma:bus:t/g:l");
	cr_assert(ttl > 0 && ttl <= 1000, "both ended: the log expires after the window (PTTL %lld)", ttl);
}
