-- The end of a run: its status, statistics and (safe, one-line) error.
UPDATE sync_log
SET status = %(status)s, finished_at = now(), heartbeat_at = now(), stats = %(stats)s,
    error_class = %(error_class)s, error_message = %(error_message)s
WHERE id = %(id)s;
