-- Incremental recompute and set-based ingest (issue 13).
--
-- active_dirty_patients: the patients whose records or appointments a page write changed (inserted, updated,
-- restored or removed), filled by the mirror's upsert in the same transaction as the page and its cursor, and drained
-- by the transaction that recomputes active_patients. A run killed between the two loses nothing: the next run's
-- recompute still finds them.
CREATE TABLE active_dirty_patients (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    patient_id      text NOT NULL,
    PRIMARY KEY (organization_id, patient_id)
);

-- What the last recompute of each organization was done for. A recompute whose settings differ, or that finds
-- recompute_all set (a reference list changed: names in every patient's JSON details may have moved), or that
-- finds no row (as_of NULL), recomputes every patient; otherwise only the dirty patients and those with an
-- appointment that crossed a window edge between the stored as_of and the new one.
CREATE TABLE active_recompute_state (
    organization_id  text PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    as_of            timestamptz,
    window_days      integer,
    include_upcoming boolean,
    recompute_all    boolean NOT NULL DEFAULT false,
    recomputed_at    timestamptz
);

-- Helpers for reading a page of Cliniko's JSON in SQL (mirror_rows_*.sql), with the meaning of records.py.

-- A Cliniko time, given as the text of a JSON field (r ->> 'key'): null and "" mean none; ISO 8601 with an offset is
-- taken as given, without one as UTC. Anything else (a number, an object, other text) fails with SQLSTATE 22007,
-- which the sync reports as a record Cliniko sent wrong. The form Cliniko sends (2024-05-01T09:30:00Z) takes a LIKE
-- and a cast in a LANGUAGE sql expression the planner inlines (a regular expression per value cost more than the
-- rest of the row); every other form goes to cliniko_time_other.
CREATE FUNCTION cliniko_time_other(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF value ~ '^\d{4}-\d\d-\d\d([T ]\d\d(:\d\d(:\d\d(\.\d{1,9})?)?)?)?(Z|z|[+-]\d\d(:?\d\d)?)$' THEN
        RETURN value::timestamptz;
    ELSIF value ~ '^\d{4}-\d\d-\d\d([T ]\d\d(:\d\d(:\d\d(\.\d{1,9})?)?)?)?$' THEN
        RETURN value::timestamp AT TIME ZONE 'UTC';
    END IF;
    RAISE EXCEPTION USING ERRCODE = '22007', MESSAGE = 'Cliniko sent a timestamp that is not ISO 8601';
END
$$;

CREATE FUNCTION cliniko_time(value text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN value IS NULL OR value = '' THEN NULL
        WHEN value LIKE '____-__-__T__:__:__Z' THEN value::timestamptz  -- the cast refuses what is not digits
        ELSE cliniko_time_other(value)
    END
$$;

-- The id at the end of a link object's self URL: {"links": {"self": ".../patients/123"}} -> '123'.
CREATE FUNCTION cliniko_link_id(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(value -> 'links' -> 'self') = 'string' THEN
        nullif(split_part(rtrim(split_part(value -> 'links' ->> 'self', '?', 1), '/'), '/', -1), '')
    END
$$;

SELECT apply_tenant_isolation();
