-- How many of an organization's current patients have a valid phone number (sync statistics).
SELECT count(*) AS patients, count(*) FILTER (WHERE phone_valid) AS with_phone
FROM current_patients
WHERE organization_id = %(org)s;
