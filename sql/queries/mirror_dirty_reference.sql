-- A changed appointment type or practitioner renames entries in the JSON details of any patient: the next
-- recompute does every patient.
INSERT INTO active_recompute_state (organization_id, recompute_all)
SELECT %(org)s, true WHERE EXISTS (SELECT 1 FROM changed)
ON CONFLICT (organization_id) DO UPDATE SET recompute_all = true
