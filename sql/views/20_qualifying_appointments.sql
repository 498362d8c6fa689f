-- DESIGN §2: a qualifying appointment is an individual appointment or a group-class attendance that is not
-- cancelled, archived or deleted; a group attendance is timed by its group appointment (which must not be archived
-- or deleted either). New columns go at the end (CREATE OR REPLACE VIEW can only append).
CREATE OR REPLACE VIEW qualifying_appointments WITH (security_invoker = true) AS
SELECT a.organization_id, a.patient_id, a.id, 'individual' AS kind, a.starts_at, a.ends_at,
       a.appointment_type_id, a.practitioner_id, a.did_not_arrive, a.business_id
FROM cliniko_individual_appointments a
WHERE a.patient_id IS NOT NULL AND a.starts_at IS NOT NULL
  AND a.cancelled_at IS NULL AND a.archived_at IS NULL AND a.deleted_at IS NULL AND a.removed_at IS NULL
UNION ALL
SELECT t.organization_id, t.patient_id, t.id, 'group', g.starts_at, g.ends_at,
       g.appointment_type_id, g.practitioner_id, t.did_not_arrive, g.business_id
FROM cliniko_attendees t
JOIN cliniko_group_appointments g ON g.organization_id = t.organization_id AND g.id = t.group_appointment_id
WHERE t.patient_id IS NOT NULL AND g.starts_at IS NOT NULL
  AND t.cancelled_at IS NULL AND t.archived_at IS NULL AND t.deleted_at IS NULL AND t.removed_at IS NULL
  AND g.archived_at IS NULL AND g.deleted_at IS NULL AND g.removed_at IS NULL;
