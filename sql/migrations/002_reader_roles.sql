-- Reader roles (DESIGN §5): row-level security keyed on grants that only the tool's own role can write.
-- Before this, the policies keyed on the session setting cliniko_sync.organization_id alone, which any reader
-- could set to another clinic. Now a reader sees the organizations `cliniko-sync db grant` mapped to it (or to a
-- role it is a member of); the setting may narrow that to one organization, never widen it.

-- Which role may read which organization. Readers get no privilege on this table.
CREATE TABLE reader_grants (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    role_name       text NOT NULL CHECK (char_length(role_name) BETWEEN 1 AND 63),
    granted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, role_name)
);
CREATE INDEX reader_grants_role_idx ON reader_grants (role_name);

-- The organizations the current role may read: its own grants and those of every role it is a member of.
-- Not security_invoker on purpose: it reads reader_grants with its owner's rights, while current_user inside it is
-- still the querying role, so a reader learns its own organizations and nothing about other roles' grants.
-- Joining pg_roles (rather than calling pg_has_role on the stored name) keeps a grant to a dropped role harmless.
CREATE VIEW reader_organizations AS
SELECT DISTINCT g.organization_id
FROM reader_grants g
JOIN pg_roles r ON r.rolname = g.role_name
WHERE pg_has_role(current_user, r.oid, 'MEMBER');
-- Every policy below reads this view as the querying role, so any role that was given SELECT on a tenant table
-- (by db grant or by hand) must be able to read it; what it shows depends only on the reader's own grants.
GRANT SELECT ON reader_organizations TO PUBLIC;

-- (Re)create the tenant_isolation policy on every table of this schema that has an organization_id column, found
-- in the catalog, so that a table added later cannot be forgotten: a migration that adds a tenant table ends with
-- `SELECT apply_tenant_isolation();` (a test fails for any tenant table without the policy).
-- The table owner (the tool's own role) is not subject to these policies: RLS is enabled, not forced.
-- contacts is left out: on a new installation it is either absent or another system's table, which 008_contacts.sql
-- adopts without row-level security (sql/views/40_tenant_isolation.sql, re-applied by every upgrade, knows which).
CREATE FUNCTION apply_tenant_isolation() RETURNS void
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
          AND c.relname <> 'contacts'
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

-- organizations is keyed by id rather than organization_id; readers are not granted it, but keep its policy in line.
DROP POLICY tenant_isolation ON organizations;
CREATE POLICY tenant_isolation ON organizations USING (
    id = ANY (ARRAY(SELECT organization_id FROM reader_organizations))
    AND id = coalesce(nullif(current_setting('cliniko_sync.organization_id', true), ''), id)
);

-- current_patients runs as the invoker, so a reader of the view needs SELECT on the cliniko_patients columns it
-- names. Name them instead of p.*: the raw Cliniko record stays out of what a reader granted the view can read.
DROP VIEW current_patients;
CREATE VIEW current_patients WITH (security_invoker = true) AS
SELECT p.organization_id, p.id, p.first_name, p.last_name, p.name, p.email, p.phone, p.phone_valid,
       p.created_at, p.updated_at, p.archived_at, p.deleted_at, p.merged_at, p.last_full_pass, p.removed_at,
       p.synced_at
FROM cliniko_patients p
WHERE p.archived_at IS NULL AND p.merged_at IS NULL AND p.deleted_at IS NULL AND p.removed_at IS NULL;
