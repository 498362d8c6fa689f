-- Every patient who is not archived, merged or deleted has a contact: create the missing ones (scope: among the
-- patients written since the last recompute; TRUE: every patient). Every column is given, none left to a default:
-- an adopted contacts table (008_contacts.sql) keeps its owner's defaults, which may be none.
INSERT INTO contacts (id, organization_id, cliniko_patient_id, name, email, phone, created_by, created_at, updated_at)
SELECT gen_random_uuid(), p.organization_id, p.id, p.name, p.email, p.phone, 'cliniko-sync', now(), now()
FROM current_patients p  -- DESIGN §2's current patients, defined once in sql/views
WHERE p.organization_id = %(org)s AND {scope}
  AND NOT EXISTS (
      SELECT 1 FROM contacts c WHERE c.organization_id = %(org)s AND c.cliniko_patient_id = p.id
  )
