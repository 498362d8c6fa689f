-- A page of Cliniko attendees as cliniko_attendees columns. The group appointment comes from the booking link
-- (booking id = group id); `arrived` is kept only as a boolean, and arrived = false means did not arrive. Cliniko
-- also keeps an attendee record for every individual appointment (its booking the appointment itself): an
-- updated_at crawl meets those, and they are left out here (the appointment is its own mirror row).
SELECT r ->> 'id' AS id,
       cliniko_link_id(r -> 'patient') AS patient_id,
       coalesce(cliniko_link_id(r -> 'booking'), cliniko_link_id(r -> 'group_appointment'),
                cliniko_link_id(r -> 'appointment')) AS group_appointment_id,
       CASE WHEN jsonb_typeof(r -> 'arrived') = 'boolean' THEN (r -> 'arrived')::boolean END AS arrived,
       (r -> 'arrived' = 'false'::jsonb) IS TRUE OR (r -> 'did_not_arrive' = 'true'::jsonb) IS TRUE AS did_not_arrive,
       cliniko_time(r ->> 'cancelled_at') AS cancelled_at,
       cliniko_time(r ->> 'archived_at') AS archived_at,
       cliniko_time(r ->> 'deleted_at') AS deleted_at,
       cliniko_time(r ->> 'created_at') AS created_at,
       coalesce(cliniko_time(r ->> 'updated_at'), cliniko_time(r ->> 'created_at')) AS updated_at,
       r - %(denied)s::text[] AS raw,
       n
FROM page
WHERE NOT EXISTS (
    SELECT 1 FROM cliniko_individual_appointments i
    WHERE i.organization_id = %(org)s AND i.id = cliniko_link_id(r -> 'booking')
)
