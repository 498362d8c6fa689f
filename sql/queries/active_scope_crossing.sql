-- Patients with an appointment that crossed a window edge when as_of moved (either way): it starts between the two
-- window starts, %(far_low)s..%(far_high)s (entered or left the window's far edge), or between the two as_of,
-- %(near_low)s..%(near_high)s (moved from upcoming to recent, or back). Nothing else about a patient depends on
-- as_of. Cancelled or archived appointments may add a patient too many (recomputing one more patient changes
-- nothing); the ranges are (organization_id, starts_at) index scans, so the cost follows the appointments in them.
WITH crossing AS (
    SELECT a.patient_id
    FROM cliniko_individual_appointments a
    WHERE a.organization_id = %(org)s AND a.patient_id IS NOT NULL
      AND (a.starts_at BETWEEN %(far_low)s AND %(far_high)s OR a.starts_at BETWEEN %(near_low)s AND %(near_high)s)
    UNION
    SELECT t.patient_id
    FROM cliniko_group_appointments g
    JOIN cliniko_attendees t ON t.organization_id = %(org)s AND t.group_appointment_id = g.id
    WHERE g.organization_id = %(org)s AND t.patient_id IS NOT NULL
      AND (g.starts_at BETWEEN %(far_low)s AND %(far_high)s OR g.starts_at BETWEEN %(near_low)s AND %(near_high)s)
)
INSERT INTO recompute_patients (patient_id, written)
SELECT patient_id, false FROM crossing
ON CONFLICT (patient_id) DO NOTHING
