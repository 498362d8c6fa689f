-- The history is complete: the window pass's cursor is no longer needed (and must not age in `status`). The
-- backfill left the window's records to the window reads, so changes to them since the last one began are read by
-- the next incremental passes: their cursors go back to it where they stand later.
WITH window_state AS (
    DELETE FROM sync_state WHERE organization_id = %(org)s AND stream = 'window'
    RETURNING cursor_updated_at
)
UPDATE sync_state s SET cursor_updated_at = w.cursor_updated_at
FROM window_state w
WHERE s.organization_id = %(org)s AND s.stream = ANY (%(streams)s::text[])
  AND w.cursor_updated_at < s.cursor_updated_at;
