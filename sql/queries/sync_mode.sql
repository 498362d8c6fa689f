-- Whether an organization's next run is incremental: every crawled stream has a cursor and no unfinished full pass.
SELECT count(*) FILTER (WHERE cursor_updated_at IS NOT NULL
                          AND NOT (pass_mode = 'full' AND NOT pass_complete)) = cardinality(%(streams)s::text[])
       AS incremental
FROM sync_state
WHERE organization_id = %(org)s AND stream = ANY (%(streams)s::text[]);
