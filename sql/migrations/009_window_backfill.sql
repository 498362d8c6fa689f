-- The backfill no longer reads again what the window pass read (issue 21).
--
-- window_from, on an organization's 'window' row of sync_state: the start of the window its first window pass read
-- (appointments starting at or after it). While the history backfills, full passes over appointments ask only for
-- those starting before it, and the attendees of the classes before it; NULL (a window read before this migration)
-- means the backfill reads everything, as before.
ALTER TABLE sync_state ADD COLUMN window_from timestamptz;
