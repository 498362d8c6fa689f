-- New individual appointments: the attendee record Cliniko keeps for each (its booking the appointment itself) is no
-- attendance; one an attendees crawl met before the appointment reached the mirror is dropped now.
, own_attendee_records AS (
    DELETE FROM cliniko_attendees t
    WHERE t.organization_id = %(org)s AND t.group_appointment_id IN (SELECT id FROM outcome WHERE fresh)
)
