-- The share counted by the last run that wrote patients (valid_phone_share.sql); NULLs when never counted.
SELECT current_patients AS patients, patients_with_phone AS with_phone
FROM active_recompute_state
WHERE organization_id = %(org)s;
