-- A page of a reference list (appointment types, practitioners); the display name comes worked out by Python in d.
SELECT r ->> 'id' AS id,
       d ->> 0 AS name,
       cliniko_time(r ->> 'created_at') AS created_at,
       coalesce(cliniko_time(r ->> 'updated_at'), cliniko_time(r ->> 'created_at')) AS updated_at,
       cliniko_time(r ->> 'archived_at') AS archived_at,
       cliniko_time(r ->> 'deleted_at') AS deleted_at,
       r - %(denied)s::text[] AS raw,
       n
FROM page
