-- Bounded growth (issue 23): how long sync_log and removed mirror rows are kept, the indexes that keep the per-minute
-- queries flat however long sync_log is, and autovacuum settings for the tables every run writes.

-- The installation's retention periods (one row), written by `cliniko-sync db prune --keep-sync-log D
-- --keep-removed D` and read by every prune. sync_log: runs older than this go, except the runs status and
-- `sync --due` read (each organization's latest success, failure, full run, ...). removed: mirror rows a complete
-- full pass found gone from Cliniko are deleted this long after it (they no longer count for anything).
CREATE TABLE retention_settings (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    keep_sync_log interval NOT NULL DEFAULT interval '90 days' CHECK (keep_sync_log > interval '0'),
    keep_removed  interval NOT NULL DEFAULT interval '30 days' CHECK (keep_removed > interval '0'),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention_settings DEFAULT VALUES;

-- Skipped runs a prune deleted, per organization: status and the Prometheus counter
-- cliniko_sync_skipped_runs_total add them to the skipped rows still in sync_log, so a prune never moves the figure.
ALTER TABLE organizations ADD COLUMN pruned_skipped_runs bigint NOT NULL DEFAULT 0;

-- The prune finds sync_log rows older than the period, oldest first, through this index (not a scan of the table).
CREATE INDEX sync_log_started_idx ON sync_log (started_at);
-- status: the latest failure (failed, partial or abandoned) is one index entry away, not a walk back through every
-- success since; and the skipped runs are counted and dated from the index alone.
CREATE INDEX sync_log_org_failure_idx ON sync_log (organization_id, started_at DESC, id DESC)
    WHERE status IN ('failed', 'partial', 'abandoned');
CREATE INDEX sync_log_org_skipped_idx ON sync_log (organization_id, started_at) WHERE status = 'skipped';

-- The prune finds removed mirror rows by when they were removed: small partial indexes holding only removed rows.
CREATE INDEX cliniko_patients_removed_idx ON cliniko_patients (removed_at) WHERE removed_at IS NOT NULL;
CREATE INDEX cliniko_individual_appointments_removed_idx
    ON cliniko_individual_appointments (removed_at) WHERE removed_at IS NOT NULL;
CREATE INDEX cliniko_group_appointments_removed_idx
    ON cliniko_group_appointments (removed_at) WHERE removed_at IS NOT NULL;
CREATE INDEX cliniko_attendees_removed_idx ON cliniko_attendees (removed_at) WHERE removed_at IS NOT NULL;

-- Autovacuum for the tables every run writes. PostgreSQL's default vacuums a table once its dead rows pass
-- 50 + 20 % of its rows: right for tables that mostly grow, too late for these.
--
-- sync_log: each run inserts a row and updates it at its end (status and finished_at are indexed: not a HOT update),
-- and the prune deletes old rows in batches. At 500 clinics synced every 15 minutes it holds millions of rows, so
-- 20 % would let hundreds of thousands of dead rows pile up between vacuums. 2 % (plus 1,000) keeps them to a day's
-- work or less. The insert settings let vacuum also run on a table that only grows (between prunes), which keeps
-- its visibility map current: status and --due read sync_log from its indexes alone (index-only scans).
ALTER TABLE sync_log SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02
);
-- sync_state: a few rows per organization (one per stream), each updated with every committed page and at the end
-- of every run. The table is small and its rows are rewritten all day: a fixed 200 dead rows (no share of the table)
-- vacuums it every few runs, which costs milliseconds and keeps it from bloating to many times its live size.
ALTER TABLE sync_state SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200);
-- active_recompute_state: one row per organization, rewritten by every run's recompute: the same reasoning.
ALTER TABLE active_recompute_state SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200);
-- active_dirty_patients: a queue. Page writes insert patients, the next recompute deletes them all, so every row
-- it ever held is dead soon after. A fixed 1,000 dead rows keeps the queue a few pages long instead of letting it
-- grow to 20 % of everything ever queued.
ALTER TABLE active_dirty_patients SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
-- active_patients: a run whose as_of moved rewrites every active row of its organization (the window bounds). Those
-- are HOT updates into the room fillfactor 45 leaves (007), cleaned by page pruning as the next run writes the page;
-- vacuum is for what pruning cannot do (index entries of rows that left, the visibility map). 5 % (plus 1,000) runs
-- it after about every twentieth clinic's run instead of every fifth, holding dead rows to a small share of the table.
ALTER TABLE active_patients SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_threshold = 1000);
-- organizations is left at the defaults: runs never write it (when an organization is due is read from sync_log);
-- only `org set` and a prune that deleted skipped runs (its counter above) do.
