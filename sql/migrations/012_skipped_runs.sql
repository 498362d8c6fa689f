-- Skipped runs counted as they happen (issue 23). status counted each organization's skipped rows in sync_log on every
-- call: one index entry per skipped run ever kept, so the count grew with the log (0.3 ms behind 10,000 rows, 1.6 ms
-- behind 1,000,000). Now each skipped run adds one to its organization's skipped_runs in the statement that records
-- it (sync_log_skipped.sql), status reads that one column, and a prune deletes skipped rows without touching it: the
-- Prometheus counter cliniko_sync_skipped_runs_total still never goes down. organizations is written by a skipped run
-- (rare: another sync held the organization's lock), never by a run that syncs.
ALTER TABLE organizations ADD COLUMN skipped_runs bigint NOT NULL DEFAULT 0;
UPDATE organizations AS o
SET skipped_runs = o.pruned_skipped_runs
    + (SELECT count(*) FROM sync_log AS s WHERE s.organization_id = o.id AND s.status = 'skipped');
-- Counted in skipped_runs above (010's count of the skipped rows a prune had deleted).
ALTER TABLE organizations DROP COLUMN pruned_skipped_runs;
