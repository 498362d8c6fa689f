-- The group classes in the window (starting at or after its start), whose attendees the first window read reads.
SELECT id FROM cliniko_group_appointments
WHERE organization_id = %(org)s AND removed_at IS NULL AND starts_at >= %(window_from)s;
