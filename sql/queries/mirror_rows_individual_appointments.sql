-- A page of Cliniko individual appointments as cliniko_individual_appointments columns; related records are read
-- from their link objects.
SELECT r ->> 'id' AS id,
       cliniko_link_id(r -> 'patient') AS patient_id,
       cliniko_link_id(r -> 'practitioner') AS practitioner_id,
       cliniko_link_id(r -> 'appointment_type') AS appointment_type_id,
       cliniko_link_id(r -> 'business') AS business_id,
       cliniko_time(r ->> 'starts_at') AS starts_at,
       cliniko_time(r ->> 'ends_at') AS ends_at,
       coalesce(r -> 'did_not_arrive' = 'true'::jsonb, false) AS did_not_arrive,
       cliniko_time(r ->> 'cancelled_at') AS cancelled_at,
       cliniko_time(r ->> 'archived_at') AS archived_at,
       cliniko_time(r ->> 'deleted_at') AS deleted_at,
       cliniko_time(r ->> 'created_at') AS created_at,
       coalesce(cliniko_time(r ->> 'updated_at'), cliniko_time(r ->> 'created_at')) AS updated_at,
       r - %(denied)s::text[] AS raw,
       n
FROM page
