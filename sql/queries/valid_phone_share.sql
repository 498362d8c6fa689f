-- How many of an organization's current patients have a valid phone number (sync statistics), kept with the
-- recompute's state: a later run that wrote no patient reads it from there (valid_phone_share_kept.sql).
WITH counted AS (
    SELECT count(*) AS patients, count(*) FILTER (WHERE phone_valid) AS with_phone
    FROM current_patients
    WHERE organization_id = %(org)s
), kept AS (
    UPDATE active_recompute_state s
    SET current_patients = c.patients, patients_with_phone = c.with_phone
    FROM counted c
    WHERE s.organization_id = %(org)s
    RETURNING 1
)
SELECT patients, with_phone FROM counted;
