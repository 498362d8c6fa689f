-- Every patient who is not archived, merged or deleted has a contact: create the missing ones (scope: among the
-- patients written since the last recompute; TRUE: every patient).
INSERT INTO contacts (organization_id, cliniko_patient_id, name, email, phone, created_by)
SELECT p.organization_id, p.id, p.name, p.email, p.phone, 'cliniko-sync'
FROM cliniko_patients p
WHERE p.organization_id = %(org)s AND {scope}
  AND p.archived_at IS NULL AND p.merged_at IS NULL AND p.deleted_at IS NULL AND p.removed_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM contacts c WHERE c.organization_id = %(org)s AND c.cliniko_patient_id = p.id
  )
