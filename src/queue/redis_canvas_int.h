/*
 * redis_canvas_int.h - the building blocks of the canvas follow-ups (redis_canvas.c), shared with
 * the chord join (redis_canvas_chord.c) and the nested group/chord follow-ups
 * (redis_canvas_nested.c). Every write is idempotent (see redis_canvas.c): a publish is guarded
 * by a marker soma-once-<owner>-<which> set in the same atomic step.
 */
#ifndef SOMA_QUEUE_REDIS_CANVAS_INT_H
#define SOMA_QUEUE_REDIS_CANVAS_INT_H

#include "queue/redis_int.h"

/* The markers' lifetime in seconds. */
long long rc_marker_ttl(void);
/* The message of signature sig as a new task, child of o (first, when not NULL, prepended to its
 * args unless immutable; chain, when a non-empty array, as its embed.chain, else sig's
 * options.chain), and the list key it goes to into key. The caller frees the text; NULL (logged)
 * when sig cannot be sent. */
char *rc_sig_message(const struct rw_outcome *o, const json_t *sig, const json_t *first, const json_t *chain,
		     char key[CELERY_KEY_MAX]);
/* Appends the once step: marker, then (text not NULL) the LPUSH of text to list, and the DEL of
 * del[0..ndel) (3 at most). False when it could not be appended. */
bool rc_append_once(struct rworker *w, const char *marker, const char *list, const char *text, const char *const *del,
		    int ndel);
/* Appends the once-publish of sig under marker soma-once-<owner>-<which> (a group or a chord
 * signature: its members, redis_canvas_nested.c). Returns the replies it owes (0: sig cannot be
 * sent, logged), -1 when the append failed. */
int rc_send_once(struct rworker *w, const struct rw_outcome *o, const char *owner, const char *which, const json_t *sig,
		 const json_t *first, const json_t *chain);
/* Appends the once-publish of each of sigs (markers <which>-0, -1, ...), as rc_send_once. */
int rc_send_each(struct rworker *w, const struct rw_outcome *o, const char *owner, const char *which,
		 const json_t *sigs, const json_t *first);
/* Reads n replies; the worst of them counts (what names them in logs). */
enum rw_write rc_read_replies(struct rworker *w, int n, const char *what);

/* A chord join owed by a task outcome: the member id, its group, the chord body, its group index
 * (borrowed, NULL: none). The member's state and result are the outcome's. */
struct rc_join {
	const char *id;
	const char *gid;
	const json_t *body;
	const json_t *index;
};
/* Appends the join of member j of o's outcome (redis_canvas_chord.c). False when it could not be
 * appended. */
bool rc_append_join(struct rworker *w, const struct rw_outcome *o, const struct rc_join *j);
/* The reply r (borrowed) of a join appended by rc_append_join: when it completed the chord and
 * fire is set (what came before it was written), fires the body (sent, or failed with
 * ChordError), once. */
enum rw_write rc_join_finish(struct rworker *w, const struct rw_outcome *o, const struct rc_join *j,
			     const redisReply *r, bool fire);

/* Appends the once-publish of a group or chord signature sig (subtask_type group/chord) as a
 * follow-up of o, as Celery's worker applies it: each member with first prepended; for a chord,
 * its size (.s) then its header members carrying the body (chain: the rest of the chain, given to
 * the body). Returns the replies owed (0: nothing sent, logged), -1 when an append failed. */
int rc_send_nested(struct rworker *w, const struct rw_outcome *o, const char *which, const json_t *sig,
		   const json_t *first, const json_t *chain);

#endif
