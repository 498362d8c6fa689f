-- Upsert one batch of Cliniko records into the mirror table. The records come as ONE jsonb array %(page)s (as Cliniko sent
-- them), with %(derived)s the values Python works out per record (same order), and are typed by the stream's mirror_rows_*.sql.
-- A batch may repeat a record: the newest version wins (the later one on a tie). Never replaces a newer row with an
-- older one, skips no-op updates (no dead tuples for unchanged rows), and marks the patients whose rows changed
-- dirty for the next recompute (mirror_dirty_*.sql), in this same transaction.
WITH page AS (
    SELECT e.r, e.d, e.n
    FROM ROWS FROM (jsonb_array_elements(%(page)s::jsonb), jsonb_array_elements(%(derived)s::jsonb))
        WITH ORDINALITY AS e (r, d, n)
), typed AS (
    {rows}
), incoming AS (
    SELECT DISTINCT ON (id) *, %(org)s::text AS organization_id FROM typed ORDER BY id, updated_at DESC, n DESC
), prior AS (
    SELECT s.*, t.updated_at AS old_updated_at, t.raw AS old_raw, t.removed_at AS old_removed_at,
           t.old_patient_id
    FROM incoming s
    -- A per-row primary-key probe. OFFSET 0 keeps it one (a plain join would hash the whole organization). The
    -- organization comes from the row, not the parameter: given the parameter, the planner trusts the statistics'
    -- row count for it, which for an organization in its first sync says "about none", and probes each id by
    -- walking the organization through another index (seconds per page once it holds tens of thousands of rows).
    LEFT JOIN LATERAL (
        SELECT m.updated_at, m.raw, m.removed_at, {old_patient} AS old_patient_id FROM {table} m
        WHERE m.organization_id = s.organization_id AND m.id = s.id OFFSET 0
    ) t ON true
), changed AS (
    SELECT * FROM prior
    WHERE old_updated_at IS NULL OR old_removed_at IS NOT NULL
       OR (updated_at >= old_updated_at AND raw IS DISTINCT FROM old_raw)
), written AS (
    INSERT INTO {table} (organization_id, {columns}, last_full_pass, removed_at, synced_at)
    SELECT organization_id, {columns}, %(pass)s, NULL, now() FROM incoming
    ON CONFLICT (organization_id, id) DO UPDATE SET
        {assignments},
        last_full_pass = COALESCE(EXCLUDED.last_full_pass, {table}.last_full_pass),
        removed_at = NULL,
        synced_at = now()
    WHERE EXCLUDED.updated_at > {table}.updated_at
       OR (EXCLUDED.updated_at = {table}.updated_at AND EXCLUDED.raw IS DISTINCT FROM {table}.raw)
       OR {table}.removed_at IS NOT NULL
       OR (EXCLUDED.last_full_pass IS NOT NULL AND EXCLUDED.last_full_pass IS DISTINCT FROM {table}.last_full_pass)
    RETURNING 1
), dirty AS (
    {dirty}
)
SELECT
    count(*) FILTER (WHERE old_updated_at IS NULL) AS inserted,
    count(*) FILTER (WHERE old_updated_at IS NOT NULL AND updated_at >= old_updated_at
                     AND (raw IS DISTINCT FROM old_raw OR old_removed_at IS NOT NULL)) AS updated,
    count(*) AS total,
    (SELECT count(*) FROM written) AS written
FROM prior
