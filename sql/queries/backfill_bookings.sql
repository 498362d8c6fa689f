-- The group classes whose attendees a full pass reads (by booking id): every class in the mirror, or while the
-- history backfills those the first window read left to it: the classes before the window, and any class changed
-- since that read took the class list (it may have moved into the window since; unknown: every class).
SELECT id FROM cliniko_group_appointments
WHERE organization_id = %(org)s AND removed_at IS NULL
  AND (%(window_from)s::timestamptz IS NULL OR starts_at < %(window_from)s
       OR %(classes_since)s::timestamptz IS NULL OR updated_at >= %(classes_since)s);
