-- Recomputing everyone: the only patients who can be active are those with a qualifying appointment from the
-- window's start to as_of (or, with include_upcoming, any time after the window's start). Found through the
-- (organization_id, starts_at) indexes, so the cost follows the window, not the history; each candidate's counts and
-- details are then read by patient (active.py), never by hashing every appointment of the organization.
INSERT INTO recompute_patients (patient_id, written)
SELECT DISTINCT q.patient_id, false
FROM qualifying_appointments q
WHERE q.organization_id = %(org)s AND q.starts_at >= %(window_from)s
  AND (%(include_upcoming)s OR q.starts_at <= %(as_of)s)
ON CONFLICT (patient_id) DO NOTHING
