-- After a complete full pass: soft-delete the rows of the mirror table that the pass did not see, and mark their patients
-- dirty (mirror_dirty_*.sql) in the same transaction.
WITH changed AS (
    UPDATE {table} SET removed_at = now()
    WHERE organization_id = %(org)s AND removed_at IS NULL AND last_full_pass IS DISTINCT FROM %(pass)s
      -- A backfill pass (window_from set) answers only for the rows it read: those before the window.
      AND (%(window_from)s::timestamptz IS NULL OR {backfilled})
    RETURNING id, {patient} AS patient_id, NULL::text AS old_patient_id
), dirty AS (
    {dirty}
)
SELECT count(*) AS removed FROM changed
