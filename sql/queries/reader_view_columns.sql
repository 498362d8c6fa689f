-- The table columns that the given views read (their select lists and conditions), from the views' recorded
-- dependencies: a reader of a security_invoker view needs SELECT on exactly these.
SELECT DISTINCT c.relname AS table_name, a.attname AS column_name
FROM pg_rewrite r
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
JOIN pg_class c ON c.oid = d.refobjid AND c.relkind IN ('r', 'p')
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE r.ev_class = ANY (%(views)s::regclass[]) AND d.refobjid <> r.ev_class
ORDER BY 1, 2;
