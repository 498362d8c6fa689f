-- A claimed organization whose sync failed before it could start (no API key, a key that cannot be decrypted, a bad
-- setting): one failed row, so `status` shows why and `sync --due` waits a sync_interval before trying it again.
INSERT INTO sync_log (organization_id, status, as_of, window_days, include_upcoming, finished_at, hostname, pid,
                      error_class, error_message)
SELECT o.id, 'failed', coalesce(%(as_of)s, now()), o.window_days, o.include_upcoming, now(), %(hostname)s, %(pid)s,
       %(error_class)s, %(error_message)s
FROM organizations o
WHERE o.id = %(organization_id)s
