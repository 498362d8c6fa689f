-- Patients who are no longer active leave the table (same transaction as active_apply); the scope condition
-- limits it to the patients being recomputed.
DELETE FROM active_patients ap
WHERE ap.organization_id = %(org)s AND {scope}
  AND NOT EXISTS (SELECT 1 FROM active_now n WHERE n.patient_id = ap.cliniko_patient_id)
