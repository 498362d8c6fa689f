-- The group classes whose attendees a full pass reads (by booking id): every class in the mirror, or while the
-- history backfills only those starting before the window (the window reads read the others).
SELECT id FROM cliniko_group_appointments
WHERE organization_id = %(org)s AND removed_at IS NULL
  AND (%(window_from)s::timestamptz IS NULL OR starts_at < %(window_from)s);
