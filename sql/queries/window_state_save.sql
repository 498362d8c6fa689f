-- Record a completed window read (first pass or refresh) with the newest updated_at it saw.
INSERT INTO sync_state AS s (organization_id, stream, pass_complete, cursor_updated_at, last_complete_at, updated_at)
VALUES (%(org)s, 'window', true, %(cursor)s, now(), now())
ON CONFLICT (organization_id, stream) DO UPDATE SET
    pass_complete = true,
    cursor_updated_at = greatest(s.cursor_updated_at, EXCLUDED.cursor_updated_at),
    last_complete_at = now(),
    updated_at = now();
