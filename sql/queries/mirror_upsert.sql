-- Upsert one batch of Cliniko records into the mirror table. The batch comes as ONE jsonb array %(pages)s of listing
-- bodies (each holds its records under the key %(envelope)s, as Cliniko sent them) less the records skipped, with
-- %(derived)s the values Python works out per record (same order, all pages), and is typed by the stream's
-- mirror_rows_*.sql.
-- A batch may repeat a record: the newest version wins (the later one on a tie). Never replaces a newer row with an
-- older one, skips no-op updates (no dead tuples for unchanged rows), and marks the patients whose rows changed
-- dirty for the next recompute (mirror_dirty_*.sql), in this same transaction, with what else a stream's new rows
-- settle (mirror_after_*.sql).
WITH page AS (
    SELECT e.r, d.d, e.n
    FROM (
        SELECT e.r, row_number() OVER (ORDER BY b.p, e.i) AS n
        FROM jsonb_array_elements(%(pages)s::jsonb) WITH ORDINALITY AS b (body, p),
             jsonb_array_elements(b.body -> %(envelope)s::text) WITH ORDINALITY AS e (r, i)
        -- Records of a body that the crawl had already read (page, position in the page; from 1).
        WHERE NOT EXISTS (
            SELECT 1 FROM unnest(%(skip_pages)s::bigint[], %(skip_items)s::bigint[]) AS k (p, i)
            WHERE k.p = b.p AND k.i = e.i
        )
    ) e
    LEFT JOIN jsonb_array_elements(%(derived)s::jsonb) WITH ORDINALITY AS d (d, n) ON d.n = e.n
), typed AS (
    {rows}
), incoming AS (
    SELECT DISTINCT ON (id) *, %(org)s::text AS organization_id FROM typed ORDER BY id, updated_at DESC, n DESC
), written AS (
    -- A row the WHERE leaves alone comes back not at all (unchanged).
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
    RETURNING {returning}
), previous AS (
    -- What each written row held before (nothing for a row inserted: fresh): mirror_returning_old.sql on 18 and
    -- later, mirror_previous_probe.sql before.
    {previous}
), outcome AS (
    -- Every inserted, updated or changed record was written (the WHERE above lets each through), so the written
    -- rows with their incoming records are all the counts and the dirty marks need.
    SELECT s.*, p.fresh, p.old_updated_at, p.old_removed_at, p.raw_changed, p.old_patient_id
    FROM previous p JOIN incoming s ON s.id = p.id
), changed AS (
    SELECT * FROM outcome
    WHERE fresh OR old_removed_at IS NOT NULL OR (updated_at >= old_updated_at AND raw_changed)
), dirty AS (
    {dirty}
){after}
SELECT
    count(*) FILTER (WHERE fresh) AS inserted,
    count(*) FILTER (WHERE NOT fresh AND updated_at >= old_updated_at
                     AND (raw_changed OR old_removed_at IS NOT NULL)) AS updated,
    (SELECT count(*) FROM incoming) AS total
FROM outcome
