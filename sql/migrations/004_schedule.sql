-- Scheduled syncs (`cliniko-sync sync --due`): how often each organization is synced, and how often fully.
-- When a run is due is derived from sync_log (whatever started the previous run: --due, a cron line per
-- organization, --all or a person), so there is no second record of the last run to keep in step.
ALTER TABLE organizations
    ADD COLUMN sync_interval      interval NOT NULL DEFAULT interval '15 minutes'
        CHECK (sync_interval BETWEEN interval '1 minute' AND interval '30 days'),
    ADD COLUMN full_sync_interval interval NOT NULL DEFAULT interval '1 day'
        CHECK (full_sync_interval BETWEEN interval '1 minute' AND interval '365 days');

-- The due query reads, per organization, the start of its latest finished run and of its latest successful full
-- run: newest first from these, one index entry each, however long sync_log grows.
CREATE INDEX sync_log_org_finished_run_idx ON sync_log (organization_id, started_at DESC)
    WHERE status IN ('success', 'failed');
CREATE INDEX sync_log_org_full_success_idx ON sync_log (organization_id, started_at DESC)
    WHERE status = 'success' AND mode = 'full';
