-- Changed individual appointments or attendees: their patient is dirty, and so is the patient they belonged to
-- before (a booking moved to another patient). Nothing to mark while the next recompute does every patient.
INSERT INTO active_dirty_patients (organization_id, patient_id)
SELECT DISTINCT %(org)s, v.patient_id
FROM changed c
CROSS JOIN LATERAL (VALUES (c.patient_id), (c.old_patient_id)) AS v (patient_id)
WHERE v.patient_id IS NOT NULL
  AND EXISTS (
      SELECT 1 FROM active_recompute_state s
      WHERE s.organization_id = %(org)s AND s.as_of IS NOT NULL AND NOT s.recompute_all
  )
-- One order for every writer: concurrent stream writers then never deadlock on the same patients.
ORDER BY v.patient_id
ON CONFLICT DO NOTHING
