-- Link patients that have no contact yet to a contact with the same field, when exactly one contact that is not
-- linked to another patient has it (emails compared lower-cased, as the mirror keeps them: another system may write
-- contacts in any case). If several patients claim one contact, the lowest Cliniko id wins. Only the contact's empty
-- fields are filled: it belongs to another system. Scope: the patients written since the last
-- recompute (TRUE: every patient; patients not written all have their contact already).
WITH unlinked_patients AS (
    SELECT p.id, p.name, p.email, p.phone
    FROM current_patients p  -- DESIGN §2's current patients, defined once in sql/views
    WHERE p.organization_id = %(org)s AND {scope}
          AND p.{field} IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM contacts linked WHERE linked.organization_id = %(org)s AND linked.cliniko_patient_id = p.id
      )
), candidates AS (
    SELECT p.id AS patient_id, f.id AS contact_id, count(*) OVER (PARTITION BY p.id) AS choices
    FROM unlinked_patients p
    JOIN contacts f ON f.organization_id = %(org)s AND f.cliniko_patient_id IS NULL AND {contact_field} = p.{field}
), claims AS (
    SELECT DISTINCT ON (contact_id) contact_id, patient_id
    FROM candidates
    WHERE choices = 1
    ORDER BY contact_id, length(patient_id), patient_id
)
UPDATE contacts c
SET cliniko_patient_id = p.id,
    name = COALESCE(NULLIF(c.name, ''), p.name),
    email = COALESCE(c.email, p.email),
    phone = COALESCE(c.phone, p.phone),
    updated_at = now()
FROM claims cl
JOIN unlinked_patients p ON p.id = cl.patient_id
WHERE c.id = cl.contact_id
