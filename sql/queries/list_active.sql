-- Active patients of one organization joined to their contacts (list-active).
-- {order_by} is composed in cliniko_sync/reports.py from a fixed list of sort keys; every value is a parameter.
-- A contact that was deleted after the last sync leaves contact_id null; the mirror then supplies name and email.
SELECT
    ap.organization_id,
    ap.cliniko_patient_id,
    ap.contact_id,
    coalesce(c.name, p.name) AS name,
    coalesce(c.phone, p.phone) AS phone,
    coalesce(c.email, p.email) AS email,
    ap.recent_appointment_count,
    ap.upcoming_appointment_count,
    ap.total_appointment_count,
    ap.last_appointment_date,
    ap.next_appointment_date,
    ap.recent_appointments,
    ap.upcoming_appointments,
    ap.search_date_from,
    ap.search_date_to,
    ap.history_complete
FROM active_patients AS ap
LEFT JOIN contacts AS c
    ON c.organization_id = ap.organization_id AND c.id = ap.contact_id
LEFT JOIN cliniko_patients AS p
    ON p.organization_id = ap.organization_id AND p.id = ap.cliniko_patient_id
WHERE ap.organization_id = %(organization_id)s
    AND ap.recent_appointment_count >= %(min_recent)s
    AND (
        %(pattern)s::text IS NULL
        OR coalesce(c.name, p.name) ILIKE %(pattern)s ESCAPE '\'
        OR coalesce(c.email, p.email) ILIKE %(pattern)s ESCAPE '\'
        OR coalesce(c.phone, p.phone) ILIKE %(pattern)s ESCAPE '\'
    )
ORDER BY {order_by}
LIMIT %(limit)s OFFSET %(offset)s
