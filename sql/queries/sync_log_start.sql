-- A new run of an organization whose lock we hold: any 'running' row left behind is a run whose process died
-- (it would still hold the lock otherwise), so it is closed as abandoned first.
WITH abandoned AS (
    UPDATE sync_log SET status = 'abandoned', finished_at = now(), error_class = 'Abandoned',
           error_message = 'the process running this sync stopped before finishing'
    WHERE organization_id = %(org)s AND status = 'running'
)
INSERT INTO sync_log (organization_id, status, mode, as_of, window_days, include_upcoming, hostname, pid)
VALUES (%(org)s, 'running', %(mode)s, %(as_of)s, %(window_days)s, %(include_upcoming)s, %(hostname)s, %(pid)s)
RETURNING id;
