-- PostgreSQL 18 and later: the upsert itself returns what each row it wrote held before (`old`, all null for a row
-- inserted), so the conflict check is the only probe of the table. new.raw is the incoming record's whenever it is
-- not older than the row (the assignments of mirror_upsert.sql).
new.id, old.id IS NULL AS fresh, old.updated_at AS old_updated_at, old.removed_at AS old_removed_at,
old.raw IS DISTINCT FROM new.raw AS raw_changed, {old_patient} AS old_patient_id
