-- The latest runs (status --history N), newest first, for one organization or all of them.
SELECT
    s.id::text AS id,
    s.organization_id,
    s.status,
    s.mode,
    date_trunc('second', s.started_at) AS started_at,
    date_trunc('second', s.finished_at) AS finished_at,
    extract(epoch FROM s.finished_at - s.started_at)::float8 AS duration_seconds,
    s.as_of,
    s.window_days,
    s.stats,
    s.error_class,
    s.error_message
FROM sync_log AS s
WHERE %(organization_id)s::text IS NULL OR s.organization_id = %(organization_id)s
ORDER BY s.started_at DESC, s.id DESC
LIMIT %(limit)s
