-- `org remove`: contacts other systems own lose their link to the organization's Cliniko patients; the rest stay.
UPDATE contacts SET cliniko_patient_id = NULL, updated_at = now()
WHERE organization_id = %(org)s AND created_by <> %(us)s AND cliniko_patient_id IS NOT NULL;
