-- A page of Cliniko group appointments as cliniko_group_appointments columns. max_attendees only when it is a
-- whole number (as records.py reads it).
SELECT r ->> 'id' AS id,
       cliniko_link_id(r -> 'practitioner') AS practitioner_id,
       cliniko_link_id(r -> 'appointment_type') AS appointment_type_id,
       cliniko_link_id(r -> 'business') AS business_id,
       cliniko_time(r ->> 'starts_at') AS starts_at,
       cliniko_time(r ->> 'ends_at') AS ends_at,
       CASE WHEN jsonb_typeof(r -> 'max_attendees') = 'number' AND (r ->> 'max_attendees') ~ '^-?[0-9]+$'
            THEN (r ->> 'max_attendees')::integer END AS max_attendees,
       cliniko_time(r ->> 'archived_at') AS archived_at,
       cliniko_time(r ->> 'deleted_at') AS deleted_at,
       cliniko_time(r ->> 'created_at') AS created_at,
       coalesce(cliniko_time(r ->> 'updated_at'), cliniko_time(r ->> 'created_at')) AS updated_at,
       r - %(denied)s::text[] AS raw,
       n
FROM page
