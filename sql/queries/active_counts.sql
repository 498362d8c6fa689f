-- The organization's active patients as of %(as_of)s (DESIGN §2) with their counts, into a temp table dropped at
-- commit. appointments: the qualifying appointments of the patients being recomputed, read by patient (active.py);
-- on a recompute of everyone, the patients with an appointment in the window (active_scope_window.sql).
CREATE TEMP TABLE active_now ON COMMIT DROP AS
SELECT q.patient_id,
       count(*) FILTER (WHERE q.starts_at >= %(window_from)s AND q.starts_at <= %(as_of)s) AS recent_appointment_count,
       count(*) FILTER (WHERE q.starts_at > %(as_of)s) AS upcoming_appointment_count,
       count(*) AS total_appointment_count,
       max(q.starts_at) FILTER (WHERE q.starts_at <= %(as_of)s) AS last_appointment_date,
       min(q.starts_at) FILTER (WHERE q.starts_at > %(as_of)s) AS next_appointment_date
FROM {appointments}
JOIN current_patients p ON p.organization_id = q.organization_id AND p.id = q.patient_id
WHERE q.organization_id = %(org)s
GROUP BY q.patient_id
HAVING count(*) FILTER (WHERE q.starts_at >= %(window_from)s AND q.starts_at <= %(as_of)s) > 0
    OR (%(include_upcoming)s AND count(*) FILTER (WHERE q.starts_at > %(as_of)s) > 0);
