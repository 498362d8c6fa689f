-- Patients with a qualifying appointment that crossed a window edge when as_of moved from %(previous)s to %(as_of)s
-- (either way): it started between the two window starts (entered or left the window's far edge) or between the
-- two as_of (moved from upcoming to recent, or back). Nothing else about a patient depends on as_of.
INSERT INTO recompute_patients (patient_id, written)
SELECT DISTINCT q.patient_id, false
FROM qualifying_appointments q
WHERE q.organization_id = %(org)s
  AND (q.starts_at BETWEEN least(%(previous)s, %(as_of)s) - %(window)s AND greatest(%(previous)s, %(as_of)s) - %(window)s
       OR q.starts_at BETWEEN least(%(previous)s, %(as_of)s) AND greatest(%(previous)s, %(as_of)s))
ON CONFLICT (patient_id) DO NOTHING
