-- PostgreSQL 15 to 17 (no RETURNING old): what each row the upsert wrote (`written`, returning its id, organization
-- and the raw it now holds) held before, read by a primary-key probe. Every part of one statement sees the table as
-- it was when the statement began, never the statement's own writes, so the probe finds the version the upsert
-- replaced: the very `old` that PostgreSQL 18 returns, given that no other transaction writes this organization's
-- rows meanwhile (one sync per organization holds its lock; one writer per stream). OFFSET 0 keeps it a probe per
-- row, and the organization comes from the row: given as the parameter, the planner trusts the statistics' count
-- for it, which for an organization in its first sync says "about none", and walks it through another index.
SELECT w.id, old.id IS NULL AS fresh, old.updated_at AS old_updated_at, old.removed_at AS old_removed_at,
       old.raw IS DISTINCT FROM w.raw AS raw_changed, {old_patient} AS old_patient_id
FROM written w
LEFT JOIN LATERAL (
    SELECT * FROM {table} m WHERE m.organization_id = w.organization_id AND m.id = w.id OFFSET 0
) old ON true
