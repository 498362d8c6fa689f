-- Mark an organization's active patients provisional (false) or exact (true), touching only rows that change.
UPDATE active_patients SET history_complete = %(complete)s
WHERE organization_id = %(org)s AND history_complete IS DISTINCT FROM %(complete)s;
