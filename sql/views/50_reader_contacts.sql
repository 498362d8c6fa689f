-- Contacts as a reader role granted by `db grant` may see them: its organizations' rows, only the columns the tool
-- keeps. Readers are granted this view on every installation, and the contacts table itself only where the tool
-- created it (row-level security guards it there); a contacts table the tool adopted (008_contacts.sql) has no
-- row-level security, so this view is the only way readers reach it, and the other system's columns stay out.
-- Not security_invoker: it reads contacts with its owner's rights and applies the tenant_isolation rule of
-- 40_tenant_isolation.sql itself. security_barrier: a reader's own conditions (a function that leaks its arguments)
-- run only on rows that passed that rule.
CREATE OR REPLACE VIEW reader_contacts WITH (security_barrier = true) AS
SELECT c.id, c.organization_id, c.cliniko_patient_id, c.name, c.email, c.phone, c.created_by, c.created_at,
       c.updated_at
FROM contacts c
WHERE c.organization_id = ANY (ARRAY(SELECT organization_id FROM reader_organizations))
  AND c.organization_id = coalesce(nullif(current_setting('cliniko_sync.organization_id', true), ''),
                                   c.organization_id);
