-- The organizations the current role may read: its own grants and those of every role it is a member of.
-- Not security_invoker on purpose: it reads reader_grants with its owner's rights, while current_user inside it is
-- still the querying role, so a reader learns its own organizations and nothing about other roles' grants.
-- Joining pg_roles (rather than calling pg_has_role on the stored name) keeps a grant to a dropped role harmless.
CREATE OR REPLACE VIEW reader_organizations AS
SELECT DISTINCT g.organization_id
FROM reader_grants g
JOIN pg_roles r ON r.rolname = g.role_name
WHERE pg_has_role(current_user, r.oid, 'MEMBER');
-- Every tenant policy reads this view as the querying role, so any role given SELECT on a tenant table (by db grant
-- or by hand) must be able to read it; what it shows depends only on the reader's own grants.
GRANT SELECT ON reader_organizations TO PUBLIC;
