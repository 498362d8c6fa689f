-- History still backfilling: every active row of the organization is provisional (total_appointment_count is a lower
-- bound), the rows this run added included.
UPDATE active_patients SET history_complete = false
WHERE organization_id = %(org)s AND history_complete;
