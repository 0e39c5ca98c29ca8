/*
 * pg_chat_files.c - the files (attachments) of the chat ops on PostgreSQL (see pg_chat.c, and
 * sqlite_chat.c / sqlite_tasks.c for the same on SQLite): a message's check and binding of the
 * files it names, and a session's delete or reset with its files deleted or handed over.
 *
 * DESIGN: attachment_refs says which sessions of a tenant name a file. A delete first locks its
 * session row (as a message to it does: sessions first), then the attachments bound to it or named
 * by it, by id. Two deletes of sessions naming one file then run one after the other: each later
 * statement reads what the other committed. Without the locks, deleting A handed a file to B from
 * a snapshot in which B still named it while the delete of B committed: the file was left bound to
 * no session, named by none (tests/e2e/test_postgres_uploads_race.py).
 * Its queued tasks are taken SKIP LOCKED: a task row another transaction holds is being reserved
 * or claimed by a relay (it leaves 'queued'; its worker finds the session gone, as for one
 * reserved a moment before the delete). Waiting for it closed a cycle with the files' locks: a
 * writer batch on another node held the task (TASK_RESERVE, SKIP LOCKED itself) and then waited
 * to bind a file this delete had locked - PostgreSQL's deadlock detector failed one of them a
 * second later, a 503 (tests/e2e/test_pg_lock_waits.py, test_pg_races.py).
 */
#include <stdio.h>

#include "store/pg_int.h"

enum soma_err pg_attachments_owned(struct pgconn *c, struct store_op *op)
{
	size_t i;
	json_t *id;
	json_array_foreach(op->attachments, i, id)
	{
		struct pg_params p = {0};
		pg_param_text(&p, json_string_value(id) ? json_string_value(id) : "");
		pg_param_text(&p, op->tenant);
		enum soma_err err;
		PGresult *r = pg_exec(c, "SELECT 1 FROM attachments WHERE id = $1 AND tenant = $2", &p, &err);
		if (!r)
			return err;
		int found = PQntuples(r);
		PQclear(r);
		if (!found) {
			snprintf(op->error_text, sizeof(op->error_text), "attachment %s not found",
				 json_string_value(id) ? json_string_value(id) : "?");
			return SOMA_ERR_NOT_FOUND;
		}
	}
	return SOMA_OK;
}

enum soma_err pg_attachments_bind(struct pgconn *c, struct store_op *op)
{
	size_t i;
	json_t *id;
	json_array_foreach(op->attachments, i, id)
	{
		struct pg_params p = {0};
		pg_param_text(&p, op->session_id);
		pg_param_text(&p, json_string_value(id) ? json_string_value(id) : "");
		pg_param_text(&p, op->tenant);
		enum soma_err err = pg_run(c,
					   "WITH bound AS (UPDATE attachments SET session_id = $1 "
					   "WHERE id = $2 AND tenant = $3 AND session_id IS NULL) "
					   "INSERT INTO attachment_refs(tenant, attachment_id, session_id) "
					   "VALUES ($3, $2, $1) ON CONFLICT DO NOTHING",
					   &p, NULL);
		if (err != SOMA_OK)
			return err;
	}
	return SOMA_OK;
}

enum soma_err pg_session_delete(struct pgconn *c, struct store_op *op, bool reset)
{
	static const char *const del_session = "DELETE FROM sessions WHERE id = $1 AND tenant = $2";
	static const char *const del_events = "DELETE FROM events WHERE session_id = $1 AND tenant = $2";
	static const char *const del_tasks =
		"DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE session_id = $1 AND tenant = $2 AND "
		"state = 'queued' FOR UPDATE SKIP LOCKED)";
	static const char *const del_refs = "DELETE FROM attachment_refs WHERE tenant = $2 AND session_id = $1";
	static const char *const hand_over =
		"UPDATE attachments a SET session_id = (SELECT min(r.session_id) FROM attachment_refs r "
		"WHERE r.tenant = $2 AND r.attachment_id = a.id) "
		"WHERE a.session_id = $1 AND a.tenant = $2 AND EXISTS (SELECT 1 FROM attachment_refs r "
		"WHERE r.tenant = $2 AND r.attachment_id = a.id)";
	static const char *const del_attach = "DELETE FROM attachments WHERE session_id = $1 AND tenant = $2";
	static const char *const lock_attach =
		"SELECT a.id FROM attachments a WHERE a.tenant = $2 AND (a.session_id = $1 OR a.id IN "
		"(SELECT r.attachment_id FROM attachment_refs r WHERE r.tenant = $2 AND r.session_id = $1)) "
		"ORDER BY a.id FOR UPDATE OF a";
	enum soma_err err = SOMA_OK;
	if (pg_session_owner(c, op->session_id, op->tenant, !reset, &err) != 1)
		return err != SOMA_OK ? err : SOMA_ERR_NOT_FOUND;
	/* lock_attach before del_refs (it reads them); del_refs before hand_over: it then sees only the
	 * other sessions' references */
	const char *const all[] = {lock_attach, del_tasks, del_events, del_refs, hand_over, del_attach, del_session};
	size_t first = reset ? 1 : 0, n = reset ? 4 : 7;
	struct pg_params p = {0};
	pg_param_text(&p, op->session_id);
	pg_param_text(&p, op->tenant);
	for (size_t i = first; i < n && err == SOMA_OK; i++)
		err = pg_run(c, all[i], &p, NULL);
	return err;
}
