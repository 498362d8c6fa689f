-- The window's first read takes the whole class list, so a class moved into the window later keeps its attendees
-- (issue 21).
--
-- window_classes_since, on an organization's 'window' row of sync_state: Cliniko's clock (a lower bound) when the
-- first window read had read every group class, before it read the attendees of those in the window. A class whose
-- updated_at is at or after it may have moved into the window since, after its attendees were left to the backfill:
-- the backfill reads the attendees of those classes too. NULL (a window read before this migration): of every class.
ALTER TABLE sync_state ADD COLUMN window_classes_since timestamptz;
