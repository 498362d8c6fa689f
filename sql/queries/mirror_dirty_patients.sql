-- Changed patient records: those patients are dirty. Nothing to mark while the next recompute does every patient
-- anyway (no recompute yet, or a reference list changed).
INSERT INTO active_dirty_patients (organization_id, patient_id)
SELECT %(org)s, c.id FROM changed c
WHERE EXISTS (
    SELECT 1 FROM active_recompute_state s
    WHERE s.organization_id = %(org)s AND s.as_of IS NOT NULL AND NOT s.recompute_all
)
-- One order for every writer: concurrent stream writers then never deadlock on the same patients.
ORDER BY c.id
ON CONFLICT DO NOTHING
