-- 0007: attachments by content, for the sweep of upload files no attachment names any more
-- (src/gateway/blob_sweep.c asks, for a batch of stored files, which no row names).
CREATE INDEX IF NOT EXISTS attachments_sha ON attachments(sha256);
