-- One batch of the removed-row prune of one mirror table: up to %(batch)s rows that a complete full pass found gone
-- from Cliniko more than %(keep)s ago. They count for nothing any more (current_patients and
-- qualifying_appointments leave them out), and a record Cliniko shows again is inserted afresh. The condition is
-- checked again on the row itself, so a row that a sync restored meanwhile (removed_at NULL) stays; rows a sync has
-- locked are left for the next batch.
WITH deleted AS (
    DELETE FROM {table} t
    WHERE (t.organization_id, t.id) IN (
        SELECT r.organization_id, r.id
        FROM {table} r
        WHERE r.removed_at < now() - %(keep)s::interval
        ORDER BY r.removed_at
        LIMIT %(batch)s
        FOR UPDATE SKIP LOCKED
    )
      AND t.removed_at < now() - %(keep)s::interval
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted;
