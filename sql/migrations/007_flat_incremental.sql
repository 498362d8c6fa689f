-- A no-change incremental run whose database work does not grow with the clinic (issue 13).
--
-- The share of current patients with a valid phone number (a sync statistic) is counted over every patient; it is
-- kept here, in the recompute's own transaction, so that a run that wrote no patient reuses it instead of counting
-- the organization again. NULL: not counted yet.
ALTER TABLE active_recompute_state
    ADD COLUMN current_patients    integer,
    ADD COLUMN patients_with_phone integer;

-- The provisional rows of an organization (window read, history still backfilling): marking them exact once the
-- history is complete finds them by this index instead of reading every active row on every run.
CREATE INDEX active_patients_provisional_idx ON active_patients (organization_id) WHERE NOT history_complete;

-- The recompute reads a patient's qualifying appointments (sql/views/20_qualifying_appointments.sql) and whether the
-- patient is current (10_current_patients.sql). Partial indexes holding exactly those rows, with the columns the
-- counts need, let it read them from the index alone (index-only scans) instead of from tables that also carry each
-- record's raw JSON: the patient indexes of 001 are replaced (the recompute was their only user), the two others are
-- new and small (group appointments; current patients, with phone_valid for the phone share).
DROP INDEX cliniko_individual_appointments_patient_idx;
CREATE INDEX cliniko_individual_appointments_qualifying_idx
    ON cliniko_individual_appointments (organization_id, patient_id, starts_at)
    WHERE patient_id IS NOT NULL AND starts_at IS NOT NULL
      AND cancelled_at IS NULL AND archived_at IS NULL AND deleted_at IS NULL AND removed_at IS NULL;
DROP INDEX cliniko_attendees_patient_idx;
CREATE INDEX cliniko_attendees_qualifying_idx
    ON cliniko_attendees (organization_id, patient_id, group_appointment_id)
    WHERE patient_id IS NOT NULL
      AND cancelled_at IS NULL AND archived_at IS NULL AND deleted_at IS NULL AND removed_at IS NULL;
CREATE INDEX cliniko_group_appointments_qualifying_idx
    ON cliniko_group_appointments (organization_id, id) INCLUDE (starts_at)
    WHERE starts_at IS NOT NULL AND archived_at IS NULL AND deleted_at IS NULL AND removed_at IS NULL;
CREATE INDEX cliniko_patients_current_idx
    ON cliniko_patients (organization_id, id) INCLUDE (phone_valid)
    WHERE archived_at IS NULL AND merged_at IS NULL AND deleted_at IS NULL AND removed_at IS NULL;

-- When as_of moves, every active row gets the new window bounds (unindexed columns): with room left in each page,
-- PostgreSQL writes the new row versions in place (HOT updates, no index entries), about five times faster at L.
-- Existing pages get the room when the table is next rewritten; new pages at once.
ALTER TABLE active_patients SET (fillfactor = 45);
