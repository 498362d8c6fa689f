-- Make active_patients equal active_now: insert the new, update the changed (contact link included). A row whose
-- values are already right is left alone: a recompute that finds what the last one found writes nothing.
INSERT INTO active_patients AS ap (
    organization_id, contact_id, cliniko_patient_id, recent_appointment_count, upcoming_appointment_count,
    total_appointment_count, last_appointment_date, next_appointment_date, recent_appointments,
    upcoming_appointments, search_date_from, search_date_to
)
SELECT %(org)s, c.id, n.patient_id, n.recent_appointment_count, n.upcoming_appointment_count,
       n.total_appointment_count, date_trunc('second', n.last_appointment_date), n.next_appointment_date,
       COALESCE(d.recent_appointments, '[]'), COALESCE(d.upcoming_appointments, '[]'), %(window_from)s, %(as_of)s
FROM active_now n
LEFT JOIN active_details d ON d.patient_id = n.patient_id
LEFT JOIN contacts c ON c.organization_id = %(org)s AND c.cliniko_patient_id = n.patient_id
ON CONFLICT (organization_id, cliniko_patient_id) DO UPDATE SET
    contact_id = EXCLUDED.contact_id,
    recent_appointment_count = EXCLUDED.recent_appointment_count,
    upcoming_appointment_count = EXCLUDED.upcoming_appointment_count,
    total_appointment_count = EXCLUDED.total_appointment_count,
    last_appointment_date = EXCLUDED.last_appointment_date,
    next_appointment_date = EXCLUDED.next_appointment_date,
    recent_appointments = EXCLUDED.recent_appointments,
    upcoming_appointments = EXCLUDED.upcoming_appointments,
    search_date_from = EXCLUDED.search_date_from,
    search_date_to = EXCLUDED.search_date_to,
    updated_at = now()
WHERE (ap.contact_id, ap.recent_appointment_count, ap.upcoming_appointment_count, ap.total_appointment_count,
       ap.last_appointment_date, ap.next_appointment_date, ap.recent_appointments, ap.upcoming_appointments,
       ap.search_date_from, ap.search_date_to)
      IS DISTINCT FROM
      (EXCLUDED.contact_id, EXCLUDED.recent_appointment_count, EXCLUDED.upcoming_appointment_count,
       EXCLUDED.total_appointment_count, EXCLUDED.last_appointment_date, EXCLUDED.next_appointment_date,
       EXCLUDED.recent_appointments, EXCLUDED.upcoming_appointments, EXCLUDED.search_date_from, EXCLUDED.search_date_to)
RETURNING (xmax = 0) AS inserted
