-- A run that found the organization locked by another sync: recorded, then counted apart by status (never the
-- "last run"). Its organization's skipped_runs counts it in the same statement (status reads that count, and a prune
-- that deletes the row leaves it).
WITH counted AS (
    UPDATE organizations SET skipped_runs = skipped_runs + 1 WHERE id = %(org)s
)
INSERT INTO sync_log (organization_id, status, as_of, window_days, include_upcoming, finished_at, hostname, pid,
                      error_class, error_message)
VALUES (%(org)s, 'skipped', %(as_of)s, %(window_days)s, %(include_upcoming)s, now(), %(hostname)s, %(pid)s,
        'LockedError', 'another sync of this organization was running');
