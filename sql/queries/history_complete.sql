-- Whether an organization's history is complete: every crawled stream has finished a full pass at least once (its
-- cursor is set only then). Until it has, active_patients is provisional (window pass first, backfill after).
SELECT count(*) FILTER (WHERE cursor_updated_at IS NOT NULL) = cardinality(%(streams)s::text[]) AS complete
FROM sync_state
WHERE organization_id = %(org)s AND stream = ANY (%(streams)s::text[]);
