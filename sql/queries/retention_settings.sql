-- The installation's retention periods (010_retention.sql); a period given (not NULL) is stored first.
UPDATE retention_settings
SET keep_sync_log = coalesce(%(keep_sync_log)s::interval, keep_sync_log),
    keep_removed = coalesce(%(keep_removed)s::interval, keep_removed),
    updated_at = CASE WHEN %(keep_sync_log)s::interval IS NULL AND %(keep_removed)s::interval IS NULL THEN updated_at
                      ELSE now() END
RETURNING keep_sync_log, keep_removed;
