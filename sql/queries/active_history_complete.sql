-- History complete: the organization's provisional active rows become exact (found by their partial index; none in
-- the steady state, so nothing is read).
UPDATE active_patients SET history_complete = true
WHERE organization_id = %(org)s AND NOT history_complete;
