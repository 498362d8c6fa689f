-- A stream's crawl state after a page, in the page's own transaction: its pass, where it stands, its cursor, and
-- when it last completed a pass (a full one separately).
INSERT INTO sync_state AS s (organization_id, stream, pass_id, pass_mode, pass_started_at, pass_complete,
    position_updated_at, position_ids, tie_after_id, cursor_updated_at, last_complete_at, last_full_complete_at,
    updated_at)
VALUES (%(org)s, %(stream)s, %(pass_id)s, %(mode)s, now(), %(complete)s, %(pos_at)s, %(pos_ids)s, %(tie)s,
    %(cursor)s, CASE WHEN %(complete)s THEN now() END,
    CASE WHEN %(complete)s AND %(mode)s = 'full' THEN now() END, now())
ON CONFLICT (organization_id, stream) DO UPDATE SET
    pass_started_at = CASE WHEN s.pass_id IS DISTINCT FROM EXCLUDED.pass_id THEN now() ELSE s.pass_started_at END,
    pass_id = EXCLUDED.pass_id, pass_mode = EXCLUDED.pass_mode, pass_complete = EXCLUDED.pass_complete,
    position_updated_at = EXCLUDED.position_updated_at, position_ids = EXCLUDED.position_ids,
    tie_after_id = EXCLUDED.tie_after_id, cursor_updated_at = EXCLUDED.cursor_updated_at,
    last_complete_at = COALESCE(EXCLUDED.last_complete_at, s.last_complete_at),
    last_full_complete_at = COALESCE(EXCLUDED.last_full_complete_at, s.last_full_complete_at),
    updated_at = now();
