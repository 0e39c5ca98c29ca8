-- 0013: which sessions of a tenant name an attachment in their messages. A message's transaction
-- adds a row per attachment it names (sqlite_tasks.c); deleting a session deletes its attachments
-- only when no other session of the tenant has a row for them, else hands each to one of those
-- (sqlite_chat.c), and drops the session's rows (a reset too: its history names nothing then).
-- Rows of messages stored before are filled in from their events' "attachments" arrays. The
-- join order is pinned (CROSS JOIN): each event is read once, its array walked, and each id looked
-- up by the attachments' primary key; SQLite's own choice, the tenant's attachments per event then
-- the array per attachment, took minutes on a million events (tests/unit/test_attach_migrate.c).
CREATE TABLE attachment_refs (
  tenant        TEXT NOT NULL,
  attachment_id TEXT NOT NULL,
  session_id    TEXT NOT NULL,
  PRIMARY KEY (tenant, attachment_id, session_id)
) WITHOUT ROWID;
CREATE INDEX attachment_refs_session ON attachment_refs(tenant, session_id);
CREATE INDEX IF NOT EXISTS attachments_session ON attachments(session_id);
INSERT OR IGNORE INTO attachment_refs(tenant, attachment_id, session_id)
  SELECT e.tenant, j.value, e.session_id
  FROM events e
  CROSS JOIN json_each(e.body, '$.attachments') j
  CROSS JOIN attachments a ON a.id = j.value AND a.tenant = e.tenant
  WHERE e.body LIKE '%"attachments"%';
