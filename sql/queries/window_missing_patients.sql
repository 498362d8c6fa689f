-- Patients the window's records name that Cliniko did not return even with archived ones included: deleted.
UPDATE cliniko_patients SET removed_at = now()
WHERE organization_id = %(org)s AND id = ANY (%(ids)s::text[]) AND removed_at IS NULL;
