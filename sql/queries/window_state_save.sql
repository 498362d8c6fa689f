-- Record a completed window read (first pass or refresh) with Cliniko's clock as it began (the next read's cursor),
-- the window's start and the class list's clock (both kept from the first pass: the backfill's edges must not move).
INSERT INTO sync_state AS s (organization_id, stream, pass_complete, cursor_updated_at, window_from,
    window_classes_since, last_complete_at, updated_at)
VALUES (%(org)s, 'window', true, %(cursor)s, %(window_from)s, %(classes_since)s, now(), now())
ON CONFLICT (organization_id, stream) DO UPDATE SET
    pass_complete = true,
    cursor_updated_at = greatest(s.cursor_updated_at, EXCLUDED.cursor_updated_at),
    window_from = coalesce(s.window_from, EXCLUDED.window_from),
    window_classes_since = coalesce(s.window_classes_since, EXCLUDED.window_classes_since),
    last_complete_at = now(),
    updated_at = now();
