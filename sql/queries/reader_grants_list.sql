-- Every reader grant, with what the catalog says about its role today (dropped, login, mirrors granted).
SELECT g.role_name AS role,
       g.organization_id,
       r.oid IS NOT NULL AS role_exists,
       coalesce(r.rolcanlogin, false) AS login,
       r.oid IS NOT NULL AND has_table_privilege(r.oid, 'cliniko_patients', 'SELECT') AS mirrors,
       g.granted_at
FROM reader_grants g
LEFT JOIN pg_roles r ON r.rolname = g.role_name
ORDER BY g.role_name, g.organization_id;
