-- A page of Cliniko patients as cliniko_patients columns. name, email and phone come worked out by Python in d
-- (phonenumbers, and the name rules of records.py); the rest is read from the record r.
SELECT r ->> 'id' AS id,
       r ->> 'first_name' AS first_name,
       r ->> 'last_name' AS last_name,
       d ->> 0 AS name,
       d ->> 1 AS email,
       d ->> 2 AS phone,
       d ->> 2 IS NOT NULL AS phone_valid,
       cliniko_time(r ->> 'created_at') AS created_at,
       coalesce(cliniko_time(r ->> 'updated_at'), cliniko_time(r ->> 'created_at')) AS updated_at,
       cliniko_time(r ->> 'archived_at') AS archived_at,
       cliniko_time(r ->> 'deleted_at') AS deleted_at,
       cliniko_time(r ->> 'merged_at') AS merged_at,
       r - %(denied)s::text[] AS raw,
       n
FROM page
