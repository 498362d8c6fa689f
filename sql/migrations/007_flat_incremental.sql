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
