-- One batch of the sync_log prune: up to %(batch)s runs that started more than %(keep)s ago, oldest first, except
-- running ones and the runs that status and `sync --due` read, kept for every organization however old (below).
-- Each "latest" is chosen exactly as status.sql and due_organizations.sql choose it, so both read the same after a
-- prune. Skipped runs deleted here stay counted: organizations.skipped_runs counts every skipped run as it is
-- recorded (a Prometheus counter), not the rows still here.
WITH kept AS (
    SELECT k.id
    FROM organizations o
    CROSS JOIN LATERAL (
        -- status: the last run, the last failure, the last success, the last skipped run
        (SELECT s.id FROM sync_log s WHERE s.organization_id = o.id AND s.status <> 'skipped'
         ORDER BY s.started_at DESC, s.id DESC LIMIT 1)
        UNION ALL
        (SELECT s.id FROM sync_log s WHERE s.organization_id = o.id AND s.status IN ('failed', 'partial', 'abandoned')
         ORDER BY s.started_at DESC, s.id DESC LIMIT 1)
        UNION ALL
        (SELECT s.id FROM sync_log s
         WHERE s.organization_id = o.id AND s.status = 'success' AND s.finished_at IS NOT NULL
         ORDER BY s.finished_at DESC LIMIT 1)
        UNION ALL
        (SELECT s.id FROM sync_log s WHERE s.organization_id = o.id AND s.status = 'skipped'
         ORDER BY s.started_at DESC LIMIT 1)
        -- sync --due: the last finished run, the last full success
        UNION ALL
        (SELECT s.id FROM sync_log s WHERE s.organization_id = o.id AND s.status IN ('success', 'failed')
         ORDER BY s.started_at DESC LIMIT 1)
        UNION ALL
        (SELECT s.id FROM sync_log s WHERE s.organization_id = o.id AND s.status = 'success' AND s.mode = 'full'
         ORDER BY s.started_at DESC LIMIT 1)
        -- and for people reading the history: the last success, the last failed run, the last full run
        UNION ALL
        (SELECT s.id FROM sync_log s WHERE s.organization_id = o.id AND s.status = 'success'
         ORDER BY s.started_at DESC LIMIT 1)
        UNION ALL
        (SELECT s.id FROM sync_log s WHERE s.organization_id = o.id AND s.status = 'failed'
         ORDER BY s.started_at DESC, s.id DESC LIMIT 1)
        UNION ALL
        (SELECT s.id FROM sync_log s WHERE s.organization_id = o.id AND s.mode = 'full'
         ORDER BY s.started_at DESC LIMIT 1)
    ) AS k
), doomed AS (
    SELECT s.id
    FROM sync_log s
    WHERE s.started_at < now() - %(keep)s::interval AND s.status <> 'running'
      AND s.id <> ALL (ARRAY(SELECT id FROM kept))
    ORDER BY s.started_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM sync_log s USING doomed d WHERE s.id = d.id
    RETURNING s.id
)
SELECT count(*) AS deleted FROM deleted;
