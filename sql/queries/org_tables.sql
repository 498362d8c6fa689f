-- Every table of the schema with an organization_id column (org remove), with the tables each one references by a
-- foreign key: rows are deleted from referencing tables first, so each DELETE's row count is that table's own.
-- Read from the catalog, so tables added by later migrations are covered without a list to keep up to date.
SELECT
    c.relname AS table_name,
    coalesce(
        array_agg(DISTINCT r.relname) FILTER (WHERE r.relname IS NOT NULL AND r.oid <> c.oid), '{}'
    ) AS references_tables
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace AND n.nspname = current_schema()
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped
LEFT JOIN pg_constraint AS f ON f.conrelid = c.oid AND f.contype = 'f'
LEFT JOIN pg_class AS r ON r.oid = f.confrelid
WHERE c.relkind IN ('r', 'p')
GROUP BY c.relname
ORDER BY c.relname
