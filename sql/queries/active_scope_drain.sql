-- The patients to recompute in this transaction: first every dirty patient, drained from active_dirty_patients (a
-- rollback puts them back). written: their records or appointments changed, so their contacts are matched too.
WITH drained AS (
    DELETE FROM active_dirty_patients WHERE organization_id = %(org)s RETURNING patient_id
)
INSERT INTO recompute_patients (patient_id, written)
SELECT patient_id, true FROM drained
