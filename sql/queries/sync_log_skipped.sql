-- A run that found the organization locked by another sync: recorded, then counted apart by status (never the
-- "last run").
INSERT INTO sync_log (organization_id, status, as_of, window_days, include_upcoming, finished_at, hostname, pid,
                      error_class, error_message)
VALUES (%(org)s, 'skipped', %(as_of)s, %(window_days)s, %(include_upcoming)s, now(), %(hostname)s, %(pid)s,
        'LockedError', 'another sync of this organization was running');
