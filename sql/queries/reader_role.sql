-- What db grant must know about a role before granting to it: whether it exists, and whether row-level security
-- can restrict it at all (superusers, BYPASSRLS roles and members of the tables' owner are never restricted).
SELECT r.rolname AS role,
       r.rolcanlogin AS login,
       r.rolsuper OR r.rolbypassrls OR pg_has_role(r.oid, c.relowner, 'MEMBER') AS bypasses_rls
FROM pg_roles r
CROSS JOIN pg_class c
WHERE r.rolname = %(role)s AND c.oid = 'reader_grants'::regclass;
