-- How much of an organization's history the mirror holds: records read so far by the window pass and the backfill.
SELECT (SELECT count(*) FROM cliniko_patients WHERE organization_id = %(org)s)
     + (SELECT count(*) FROM cliniko_individual_appointments WHERE organization_id = %(org)s)
     + (SELECT count(*) FROM cliniko_group_appointments WHERE organization_id = %(org)s)
     + (SELECT count(*) FROM cliniko_attendees WHERE organization_id = %(org)s) AS records;
