-- Row-level security on every tenant table, found in the catalog (every table of this schema with an
-- organization_id column), re-applied by every `db upgrade`: a table added by a later migration cannot be forgotten
-- (a test fails for any tenant table without the policy). A row is visible to a reader when its organization is
-- granted to the reader (reader_organizations); the session setting cliniko_sync.organization_id may narrow that to
-- one organization but never widen it. A table the tool adopted (a contacts table another system owns,
-- 008_contacts.sql) is left as its owner keeps it, its readers reading it through a view (50_reader_contacts.sql),
-- unless `db upgrade --contacts-row-security` asked for the policy there too.
-- The table owner (the tool's own role) is not subject to these policies: RLS is enabled, not forced.
CREATE OR REPLACE FUNCTION apply_tenant_isolation() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tenant_table regclass;
BEGIN
    FOR tenant_table IN
        SELECT c.oid::regclass
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p')
          AND a.attname = 'organization_id' AND NOT a.attisdropped
          AND c.relname NOT IN (SELECT table_name FROM adopted_tables WHERE NOT row_security)
        ORDER BY 1
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tenant_table);
        -- ARRAY(SELECT …) is evaluated once per query (an InitPlan), not once per row.
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %s USING ('
            '  organization_id = ANY (ARRAY(SELECT organization_id FROM reader_organizations))'
            '  AND organization_id = coalesce(nullif(current_setting(''cliniko_sync.organization_id'', true), ''''),'
            '                                 organization_id))',
            tenant_table);
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION apply_tenant_isolation() FROM PUBLIC;

SELECT apply_tenant_isolation();
