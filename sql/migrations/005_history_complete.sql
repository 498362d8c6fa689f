-- Until an organization's history is complete (window pass first, backfill after), its active_patients rows are
-- provisional: membership and every field are exact except total_appointment_count, a lower bound until then.
ALTER TABLE active_patients ADD COLUMN history_complete boolean NOT NULL DEFAULT true;
