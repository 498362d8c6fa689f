-- Changed group appointments (time, archival, deletion): every patient attending them is dirty. Nothing to mark
-- while the next recompute does every patient.
INSERT INTO active_dirty_patients (organization_id, patient_id)
SELECT DISTINCT %(org)s, a.patient_id
FROM changed c
JOIN cliniko_attendees a ON a.organization_id = %(org)s AND a.group_appointment_id = c.id
WHERE a.patient_id IS NOT NULL
  AND EXISTS (
      SELECT 1 FROM active_recompute_state s
      WHERE s.organization_id = %(org)s AND s.as_of IS NOT NULL AND NOT s.recompute_all
  )
-- One order for every writer: concurrent stream writers then never deadlock on the same patients.
ORDER BY a.patient_id
ON CONFLICT DO NOTHING
