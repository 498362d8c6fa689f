-- Sync health per organization (status): the latest finished run, the latest success, the latest failure, skipped
-- runs, active patients, cursors, liveness.
-- A 'skipped' run (the organization was locked by another sync, exit 75) did no work: it is counted apart and never
-- becomes the "last run", which would otherwise hide the real last run behind a 0-second no-op. They are counted as
-- they are recorded (organizations.skipped_runs, 012: a count over sync_log grew with it), and a prune never lowers
-- that count (retention_sync_log.sql keeps every row read here).
-- A run counts as running only while its heartbeat is fresh: a killed process leaves a 'running' row behind.
-- The cursor age is sync lag: when the least recently advanced stream last moved (sync_state.updated_at). The cursor
-- value itself (Cliniko's newest updated_at) can be days old in a quiet clinic that is perfectly in sync.
SELECT
    o.id AS organization_id,
    o.name,
    o.enabled,
    last_run.id::text AS last_run_id,
    last_run.status AS last_run_status,
    last_run.mode AS last_run_mode,
    date_trunc('second', last_run.started_at) AS last_run_started_at,
    date_trunc('second', last_run.finished_at) AS last_run_finished_at,
    extract(epoch FROM now() - last_run.started_at)::float8 AS last_run_age_seconds,
    extract(epoch FROM last_run.finished_at - last_run.started_at)::float8 AS last_run_duration_seconds,
    last_run.stats AS last_run_stats,
    last_run.error_class AS last_run_error_class,
    last_run.error_message AS last_run_error_message,
    date_trunc('second', last_success.finished_at) AS last_success_at,
    date_trunc('second', last_failure.finished_at) AS last_failure_at,
    extract(epoch FROM now() - last_failure.finished_at)::float8 AS last_failure_age_seconds,
    last_failure.status AS last_failure_status,
    last_failure.error_class AS last_failure_error_class,
    last_failure.error_message AS last_failure_message,
    o.skipped_runs,
    date_trunc('second', last_skipped.started_at) AS last_skipped_at,
    extract(epoch FROM now() - last_success.finished_at)::float8 AS last_success_age_seconds,
    (SELECT count(*) FROM active_patients AS ap WHERE ap.organization_id = o.id) AS active_patients,
    date_trunc('second', cursors.oldest_cursor_at) AS oldest_cursor_at,
    extract(epoch FROM now() - cursors.oldest_cursor_at)::float8 AS oldest_cursor_age_seconds,
    EXISTS (
        SELECT 1 FROM sync_log AS s
        WHERE s.organization_id = o.id AND s.status = 'running' AND s.heartbeat_at > now() - interval '2 minutes'
    ) AS running,
    date_trunc('second', now()) AS checked_at
FROM organizations AS o
LEFT JOIN LATERAL (
    SELECT s.* FROM sync_log AS s
    WHERE s.organization_id = o.id AND s.status <> 'skipped'
    ORDER BY s.started_at DESC, s.id DESC
    LIMIT 1
) AS last_run ON true
LEFT JOIN LATERAL (
    SELECT s.finished_at, s.status, s.error_class, s.error_message FROM sync_log AS s
    WHERE s.organization_id = o.id AND s.status IN ('failed', 'partial', 'abandoned')
    ORDER BY s.started_at DESC, s.id DESC
    LIMIT 1
) AS last_failure ON true
LEFT JOIN LATERAL (
    SELECT s.started_at FROM sync_log AS s
    WHERE s.organization_id = o.id AND s.status = 'skipped'
    ORDER BY s.started_at DESC
    LIMIT 1
) AS last_skipped ON true
LEFT JOIN LATERAL (
    SELECT s.finished_at FROM sync_log AS s
    WHERE s.organization_id = o.id AND s.status = 'success' AND s.finished_at IS NOT NULL
    ORDER BY s.finished_at DESC
    LIMIT 1
) AS last_success ON true
LEFT JOIN LATERAL (
    SELECT min(st.updated_at) AS oldest_cursor_at
    FROM sync_state AS st
    WHERE st.organization_id = o.id AND st.stream <> 'window'
) AS cursors ON true
WHERE %(organization_id)s::text IS NULL OR o.id = %(organization_id)s
ORDER BY o.id
