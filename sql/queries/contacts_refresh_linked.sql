-- Keep linked contacts in step with their Cliniko patient: contacts this tool created follow the patient;
-- contacts another system owns only get their empty fields filled. Scope: the patients written since the last
-- recompute (TRUE: every patient).
WITH wanted AS (
    SELECT c.id,
           CASE WHEN c.created_by = 'cliniko-sync' THEN p.name ELSE COALESCE(NULLIF(c.name, ''), p.name) END AS name,
           CASE WHEN c.created_by = 'cliniko-sync' THEN p.email ELSE COALESCE(c.email, p.email) END AS email,
           CASE WHEN c.created_by = 'cliniko-sync' THEN p.phone ELSE COALESCE(c.phone, p.phone) END AS phone
    FROM contacts c
    JOIN cliniko_patients p ON p.organization_id = c.organization_id AND p.id = c.cliniko_patient_id
    WHERE c.organization_id = %(org)s AND p.removed_at IS NULL AND {scope}
)
UPDATE contacts c
SET name = w.name, email = w.email, phone = w.phone, updated_at = now()
FROM wanted w
WHERE c.id = w.id AND (c.name, c.email, c.phone) IS DISTINCT FROM (w.name, w.email, w.phone)
