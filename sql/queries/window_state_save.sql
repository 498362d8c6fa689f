-- Record a completed window read (first pass or refresh) with Cliniko's clock as it began (the next read's cursor),
-- and the window's start (kept from the first pass: the backfill's edge must not move).
INSERT INTO sync_state AS s (organization_id, stream, pass_complete, cursor_updated_at, window_from, last_complete_at,
    updated_at)
VALUES (%(org)s, 'window', true, %(cursor)s, %(window_from)s, now(), now())
ON CONFLICT (organization_id, stream) DO UPDATE SET
    pass_complete = true,
    cursor_updated_at = greatest(s.cursor_updated_at, EXCLUDED.cursor_updated_at),
    window_from = coalesce(s.window_from, EXCLUDED.window_from),
    last_complete_at = now(),
    updated_at = now();
