-- Patients who are no longer active leave the table (same transaction as active_apply).
DELETE FROM active_patients ap
WHERE ap.organization_id = %(org)s
  AND NOT EXISTS (SELECT 1 FROM active_now n WHERE n.patient_id = ap.cliniko_patient_id)
