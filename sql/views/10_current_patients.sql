-- DESIGN §2, in one place: a current patient is not archived, merged or deleted (in Cliniko, or removed from the
-- mirror by a full pass). security_invoker: a reader querying the view stays under the tables' row-level security,
-- and needs SELECT on the columns it names (so they are named: the raw Cliniko record stays out).
CREATE OR REPLACE VIEW current_patients WITH (security_invoker = true) AS
SELECT p.organization_id, p.id, p.first_name, p.last_name, p.name, p.email, p.phone, p.phone_valid,
       p.created_at, p.updated_at, p.archived_at, p.deleted_at, p.merged_at, p.last_full_pass, p.removed_at,
       p.synced_at
FROM cliniko_patients p
WHERE p.archived_at IS NULL AND p.merged_at IS NULL AND p.deleted_at IS NULL AND p.removed_at IS NULL;
