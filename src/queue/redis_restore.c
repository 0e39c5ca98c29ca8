/*
 * redis_restore.c - the redis driver's process-wide part: kombu's visibility restore, the
 * messages held for their eta, time limits, and the refresh of this process's unacked entries.
 *
 * DESIGN: one maintenance thread with its own connection, woken every 100 ms:
 *   - time limits of running tasks (queue_pool_tick): soft -> the task is asked to stop;
 *   - every third of the visibility timeout: ZADD XX a fresh score for the unacked entry of every
 *     message this process runs or holds (a long task or a far eta is not restored by anyone's
 *     sweep while we are alive; kombu itself does not do this, and is compatible with it);
 *   - at start and then every min(visibility/4, 60 s): restore_visible exactly as kombu does it:
 *     SET unacked_mutex <token> NX PX 300000 (skip when held), ZREVRANGEBYSCORE unacked_index
 *     (now - visibility) 0, for each: WATCH unacked, HGET, MULTI, ZREM + HDEL + RPUSH of the
 *     envelope (redelivered flags set) to its queue's band key, EXEC; then the inflight keys of
 *     workers that have not waited for a visibility timeout (redis_int.h) go back to their band;
 *     release by compare-and-DEL. The mutex expires with the visibility timeout (kombu: 300 s).
 *     An entry is read as our consumer reads a message (json_py: \u0000, lone surrogates); one
 *     that cannot be pushed back is left in unacked with an error logged, never HDEL'd alone.
 * Held messages (eta in the future) sit in a mutex-guarded array; on stop they are restored, each
 * with the release of the run-lock its taker holds (in the same MULTI): a lock left behind made
 * the next process ack the message as "running on another worker", and the task never ran.
 * `inspect scheduled` lists them (queue_scheduled_json, decoded under the mutex: rare).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/json_py.h"
#include "core/log.h"
#include "queue/redis_int.h"

#define HELD_MAX 100000

struct held {
	char queue[64]; /* its queue */
	char *tag;	/* delivery tag (owned: one block with lock) */
	char *text;	/* envelope as received */
	size_t len;	/* its length */
	int64_t due_ms; /* eta */
	char *lock;	/* its run-lock ("" when its taker holds none; in tag's block) */
	char owner[64]; /* the worker id that lock holds */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct held *held;
static int nheld;
static pthread_t tid;
static bool running, stop;
static struct redis_conn *conn;

/* The inflight keys of workers that have not waited since ARGV[1] (s): each is emptied back onto
 * the right end of its band (the next popped) and unregistered. Returns how many were moved. */
static const char inflight_script[] =
	"local n = 0 "
	"for _, mem in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, 1000)) do "
	"  local nl = string.find(mem, '\\n', 1, true) "
	"  if nl then "
	"    local band, key = string.sub(mem, 1, nl - 1), ARGV[2] .. mem "
	"    local m = redis.call('RPOP', key) "
	"    while m do redis.call('RPUSH', band, m) n = n + 1 m = redis.call('RPOP', key) end "
	"  end "
	"  redis.call('ZREM', KEYS[1], mem) "
	"end "
	"return n";

static const char release_script[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/* The envelope with kombu's redelivered flags, as text (caller frees); *priority from it. */
static char *redelivered(const char *text, size_t len, int *priority)
{
	json_t *env = json_py_load(text, len, 0, NULL);
	if (!json_is_object(env)) {
		json_decref(env);
		return NULL;
	}
	json_t *h = json_object_get(env, "headers"), *p = json_object_get(env, "properties");
	if (json_is_object(h))
		json_object_set_new(h, "redelivered", json_true());
	json_t *di = json_object_get(p, "delivery_info");
	if (json_is_object(di))
		json_object_set_new(di, "redelivered", json_true());
	json_int_t prio = json_integer_value(json_object_get(p, "priority"));
	*priority = prio < 0 ? 0 : prio > 9 ? 9 : (int)prio;
	char *out = json_dumps(env, JSON_COMPACT);
	json_decref(env);
	return out;
}

/* Appends MULTI, ZREM, HDEL, RPUSH (when text), the compare-and-delete of lock (when set), EXEC;
 * returns how many replies to read, or 0 (nothing appended) when text is set but cannot be pushed
 * back (not an object even to the lenient reader, or no queue key): the entry must then stay in
 * unacked, never deleted without its push. */
static int append_restore(struct redis_conn *c, const char *tag, const char *text, size_t len, const char *queue,
			  const char *run_lock, const char *owner)
{
	int prio = 0, n = 0;
	char *env = text ? redelivered(text, len, &prio) : NULL;
	char key[CELERY_KEY_MAX];
	if (text && (!env || !celery_queue_key(queue, prio, key, sizeof(key)))) {
		free(env);
		return 0;
	}
	const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"}, *z[] = {"ZREM", "unacked_index", tag},
		   *h[] = {"HDEL", "unacked", tag};
	size_t ml[] = {5}, el[] = {4}, zl[] = {4, 13, strlen(tag)}, hl[] = {4, 7, strlen(tag)};
	n += redis_append_argv(c, 1, multi, ml) == SOMA_OK;
	n += redis_append_argv(c, 3, z, zl) == SOMA_OK;
	n += redis_append_argv(c, 3, h, hl) == SOMA_OK;
	if (env) {
		const char *r[] = {"RPUSH", key, env};
		size_t rl[] = {5, strlen(key), strlen(env)};
		n += redis_append_argv(c, 3, r, rl) == SOMA_OK;
	}
	if (run_lock && run_lock[0] && owner && owner[0]) {
		const char *d[] = {"EVAL", release_script, "1", run_lock, owner};
		size_t dl[] = {4, sizeof(release_script) - 1, 1, strlen(run_lock), strlen(owner)};
		n += redis_append_argv(c, 5, d, dl) == SOMA_OK;
	}
	n += redis_append_argv(c, 1, exec, el) == SOMA_OK;
	free(env);
	return n;
}

/* Reads n replies; true when the last (EXEC) is an array (the transaction ran). */
static bool read_replies(struct redis_conn *c, int n)
{
	bool ok = false;
	if (n <= 0)
		return false;
	for (int i = 0; i < n; i++) {
		redisReply *r = redis_get_reply(c);
		if (!r)
			return false;
		if (i == n - 1)
			ok = r->type == REDIS_REPLY_ARRAY;
		freeReplyObject(r);
	}
	return ok;
}

enum soma_err redis_restore_one(struct redis_conn *c, const char *tag, const char *envelope, size_t len,
				const char *queue, const char *run_lock, const char *owner)
{
	int n = append_restore(c, tag, envelope, len, queue, run_lock, owner);
	return read_replies(c, n) ? SOMA_OK : SOMA_ERR_UNAVAILABLE;
}

/* kombu's restore_by_tag: WATCH unacked; HGET; MULTI ZREM HDEL RPUSH EXEC (retried on a race). */
static void restore_by_tag(struct redis_conn *c, const char *tag)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		freeReplyObject(redis_cmd(c, "WATCH unacked"));
		redisReply *v = redis_cmd(c, "HGET unacked %s", tag);
		if (!v)
			return;
		/* read as our consumer read the message (json_py: a Python peer's \u0000 and lone
		 * surrogates), so that what one accepted the other can put back */
		bool found = v->type == REDIS_REPLY_STRING;
		json_t *entry = found ? json_py_load(v->str, v->len, 0, NULL) : NULL;
		freeReplyObject(v);
		char *text = json_is_object(json_array_get(entry, 0))
				     ? json_dumps(json_array_get(entry, 0), JSON_COMPACT | JSON_ENCODE_ANY)
				     : NULL;
		const char *rk = json_string_value(json_array_get(entry, 2));
		char queue[CELERY_KEY_MAX];
		snprintf(queue, sizeof(queue), "%s", rk && rk[0] ? rk : "celery");
		json_decref(entry);
		/* (no run-lock: its taker may still be alive; a dead one's expired before this) */
		int n = found && !text ? 0 : append_restore(c, tag, text, text ? strlen(text) : 0, queue, NULL, NULL);
		free(text);
		if (n == 0) { /* an entry we cannot push back is left where it is, never deleted */
			freeReplyObject(redis_cmd(c, "UNWATCH"));
			log_error("queue",
				  "cannot restore unacked message %s (its entry in unacked is not a message we can "
				  "read); left in unacked for an operator (HGET unacked %s)",
				  tag, tag);
			return;
		}
		if (read_replies(c, n)) {
			log_info("queue", "restored unacked message %s to %s (visibility timeout passed)", tag, queue);
			return;
		}
	}
}

void redis_restore_sweep(struct redis_conn *c, int64_t visibility_ms)
{
	char token[33];
	if (ids_random_hex(token, 32) != SOMA_OK)
		return;
	/* kombu holds it up to 300 s; ours expires with the visibility timeout (at least 5 s), so a
	 * worker killed mid-sweep holds back the next sweeps that long, not five minutes (a sweep
	 * that overlaps another is safe: each restore is WATCHed) */
	long long px = visibility_ms < 300000 ? visibility_ms : 300000;
	redisReply *r = redis_cmd(c, "SET unacked_mutex %s NX PX %lld", token, px);
	bool mine = r && r->type == REDIS_REPLY_STATUS;
	freeReplyObject(r);
	if (!mine)
		return; /* another worker is sweeping */
	char ceil[32];
	snprintf(ceil, sizeof(ceil), "%.6f", (double)(clock_wall_ms() - visibility_ms) / 1000.0);
	r = redis_cmd(c, "ZREVRANGEBYSCORE unacked_index %s 0 LIMIT 0 1000", ceil);
	for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		restore_by_tag(c, r->element[i]->str);
	freeReplyObject(r);
	snprintf(ceil, sizeof(ceil), "%lld", (long long)((clock_wall_ms() - visibility_ms) / 1000));
	r = redis_cmd(c, "EVAL %s 1 %s %s %s", inflight_script, REDIS_INFLIGHT_INDEX, ceil, REDIS_INFLIGHT_PREFIX);
	if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
		log_info("queue", "restored %lld message(s) a killed worker had taken but not recorded",
			 (long long)r->integer);
	freeReplyObject(r);
	freeReplyObject(redis_cmd(c, "EVAL %s 1 unacked_mutex %s", release_script, token));
}

void redis_hold(const char *queue, const char *tag, char *text, size_t len, int64_t due_ms, const char *run_lock,
		const char *owner)
{
	const char *rl = run_lock && owner ? run_lock : "";
	size_t tl = strlen(tag), ll = strlen(rl);
	char *keys = malloc(tl + ll + 2); /* tag, then the run-lock: ids of any length we run fit */
	pthread_mutex_lock(&lock);
	if (keys && nheld < HELD_MAX && (held || (held = calloc(HELD_MAX, sizeof(*held))))) {
		struct held *h = &held[nheld++];
		snprintf(h->queue, sizeof(h->queue), "%s", queue);
		memcpy(keys, tag, tl + 1);
		memcpy(keys + tl + 1, rl, ll + 1);
		h->tag = keys, h->lock = keys + tl + 1, keys = NULL;
		h->text = text, h->len = len, h->due_ms = due_ms;
		snprintf(h->owner, sizeof(h->owner), "%s", run_lock && owner ? owner : "");
		text = NULL;
	}
	pthread_mutex_unlock(&lock);
	free(keys);
	if (text) { /* full (or out of memory): leave it unacked; a sweep restores it after the visibility timeout */
		log_warn("queue", "more than %d messages held for their eta; %s waits for the visibility restore",
			 HELD_MAX, tag);
		free(text);
	}
}

bool redis_hold_take(const char *queue, char **text, size_t *len, char tag[CELERY_ID_BYTES + 1], char owner[64],
		     int64_t *next_ms)
{
	int64_t now = clock_wall_ms();
	bool got = false;
	*next_ms = INT64_MAX;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nheld; i++) {
		if (strcmp(held[i].queue, queue) != 0)
			continue;
		if (!got && held[i].due_ms <= now) {
			*text = held[i].text, *len = held[i].len;
			snprintf(tag, CELERY_ID_BYTES + 1, "%s", held[i].tag);
			free(held[i].tag);
			memcpy(owner, held[i].owner, 64);
			held[i--] = held[--nheld];
			got = true;
		} else if (held[i].due_ms < *next_ms) {
			*next_ms = held[i].due_ms;
		}
	}
	pthread_mutex_unlock(&lock);
	return got;
}

struct refresh {
	char score[32]; /* now, in seconds */
	int n;		/* commands appended */
};

static void refresh_tag(const char *tag, void *arg)
{
	struct refresh *a = arg;
	const char *z[] = {"ZADD", "unacked_index", "XX", a->score, tag};
	size_t zl[] = {4, 13, 2, strlen(a->score), strlen(tag)};
	if (redis_append_argv(conn, 5, z, zl) == SOMA_OK)
		a->n++;
}

/* ZADD XX now for every message this process runs or holds. */
static void refresh(void)
{
	struct refresh a = {.n = 0};
	if (redis_conn_ensure(conn) != SOMA_OK)
		return;
	redis_unacked_score(clock_wall_ms(), a.score, sizeof(a.score));
	queue_pool_running_tags(refresh_tag, &a);
	pthread_mutex_lock(&lock);
	for (int i = 0; i < nheld; i++)
		refresh_tag(held[i].tag, &a);
	pthread_mutex_unlock(&lock);
	read_replies(conn, a.n);
}

static void *maintain(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-q-restore");
	int64_t vt = queue_visibility_ms();
	int64_t sweep_every = vt / 4 < 1000 ? 1000 : vt / 4 > 60000 ? 60000 : vt / 4;
	int64_t last_sweep = 0, last_refresh = clock_wall_ms();
	for (;;) {
		pthread_mutex_lock(&lock);
		bool quit = stop;
		pthread_mutex_unlock(&lock);
		if (quit)
			break;
		int64_t now = clock_wall_ms();
		queue_pool_tick(now);
		if (now - last_refresh >= vt / 3) {
			refresh();
			last_refresh = now;
		}
		if (now - last_sweep >= sweep_every) {
			redis_restore_sweep(conn, vt);
			last_sweep = clock_wall_ms();
		}
		struct timespec ts = {0, 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

enum soma_err redis_queue_init(void)
{
	if (!(conn = redis_queue_connect(5000)))
		return SOMA_ERR_INVALID;
	stop = false;
	if (pthread_create(&tid, NULL, maintain, NULL) != 0) {
		redis_conn_close(conn);
		conn = NULL;
		return SOMA_ERR_INTERNAL;
	}
	running = true;
	return SOMA_OK;
}

/* Stops the thread, then gives back every held message (front of its queue, unacked-free). */
void redis_queue_deinit(void)
{
	if (!running)
		return;
	pthread_mutex_lock(&lock);
	stop = true;
	pthread_mutex_unlock(&lock);
	pthread_join(tid, NULL);
	running = false;
	for (int i = 0; i < nheld; i++) {
		if (redis_restore_one(conn, held[i].tag, held[i].text, held[i].len, held[i].queue, held[i].lock,
				      held[i].owner) != SOMA_OK)
			log_warn("queue",
				 "cannot give back held message %s; it is restored after the visibility timeout",
				 held[i].tag);
		free(held[i].text);
		free(held[i].tag);
	}
	nheld = 0;
	free(held);
	held = NULL;
	redis_conn_close(conn);
	conn = NULL;
}

/* One held message as Celery 5.2's scheduled() lists a timer entry (worker/control.py): its
 * request as Request.info describes one not started (time_start null, not acknowledged). */
static json_t *scheduled_one(const struct held *h, const char *hostname)
{
	struct celery_msg m;
	char why[128];
	if (celery_envelope_decode(h->text, h->len, &m, why, sizeof(why)) != SOMA_OK)
		return NULL;
	json_t *out = json_pack("{s:s?, s:i, s:{s:s, s:s, s:O, s:O, s:s, s:s, s:n, s:b, s:{s:s, s:s, s:i, s:b}, s:n}}",
				"eta", m.eta_text, "priority", m.priority, "request", "id", m.id, "name", m.task,
				"args", m.args, "kwargs", m.kwargs, "type", m.task, "hostname", hostname, "time_start",
				"acknowledged", 0, "delivery_info", "exchange", m.exchange ? m.exchange : "",
				"routing_key", m.routing_key ? m.routing_key : h->queue, "priority", m.priority,
				"redelivered", 0, "worker_pid");
	celery_msg_deinit(&m);
	return out;
}

json_t *queue_scheduled_json(const char *hostname)
{
	json_t *out = json_array();
	pthread_mutex_lock(&lock);
	for (int i = 0; out && i < nheld; i++) {
		json_t *one = scheduled_one(&held[i], hostname);
		if (one)
			json_array_append_new(out, one);
	}
	pthread_mutex_unlock(&lock);
	return out;
}
