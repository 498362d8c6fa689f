-- Enabled organizations whose next sync is due (`sync --due`), longest-waiting first, and whether that run should be
-- a full one. Times are the database's clock, so hosts whose clocks disagree still agree on what is due.
--   due:  no run that finished (success or failed) started within the organization's sync_interval. A partial,
--         abandoned or skipped run does not count, so a run cut short or killed is resumed at the next claim.
--   full: no successful full run started within its full_sync_interval (also true before the first sync).
-- Left out: organizations another session is syncing now (the sync's own advisory lock, whoever started it) or
-- has claimed (the claim lock), those named in %(exclude)s, and with %(organization_id)s, all others.
WITH held AS (
    SELECT k.classid, k.objid
    FROM pg_locks k
    WHERE k.locktype = 'advisory' AND k.objsubid = 2 AND k.granted
      AND k.pid <> pg_backend_pid()
      AND k.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND k.classid IN (%(sync_namespace)s::oid, %(claim_namespace)s::oid)
)
SELECT o.id AS organization_id,
       (last_full.started_at IS NULL OR last_full.started_at <= now() - o.full_sync_interval) AS full_due
FROM organizations o
LEFT JOIN LATERAL (
    SELECT l.started_at
    FROM sync_log l
    WHERE l.organization_id = o.id AND l.status IN ('success', 'failed')
    ORDER BY l.started_at DESC
    LIMIT 1
) AS last_run ON true
LEFT JOIN LATERAL (
    SELECT l.started_at
    FROM sync_log l
    WHERE l.organization_id = o.id AND l.status = 'success' AND l.mode = 'full'
    ORDER BY l.started_at DESC
    LIMIT 1
) AS last_full ON true
WHERE o.enabled
  AND (%(organization_id)s::text IS NULL OR o.id = %(organization_id)s::text)
  AND o.id <> ALL (%(exclude)s::text[])
  AND (last_run.started_at IS NULL OR last_run.started_at <= now() - o.sync_interval)
  AND NOT EXISTS (SELECT 1 FROM held h WHERE h.objid = hashtext(o.id)::oid)
ORDER BY last_run.started_at NULLS FIRST, o.id
LIMIT %(limit)s
