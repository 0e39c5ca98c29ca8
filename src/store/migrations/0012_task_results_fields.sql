-- 0012: a finished task's row says what GET /v1/tasks/{id} promises (task, retries, started_at),
-- and results expire (queue.result_expires_s): name, retries and started_ms are copied from the
-- task's queue row when it finishes (NULL for rows written before), and the sweep deletes the
-- rows completed before the cutoff through the completed_ms index (sqlite_tasks.c).
ALTER TABLE task_results ADD COLUMN name TEXT;
ALTER TABLE task_results ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_results ADD COLUMN started_ms INTEGER;
CREATE INDEX IF NOT EXISTS task_results_completed ON task_results(completed_ms);
