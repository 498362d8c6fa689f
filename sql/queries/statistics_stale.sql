-- The tables the recompute reads whose planner statistics are missing (never analyzed) or stale (more than a tenth
-- of their rows changed since, as autovacuum would judge it, which may not have come round yet). Table-wide: the
-- statistics are shared by every organization.
SELECT c.relname AS name
FROM pg_class c
JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relnamespace = current_schema()::regnamespace
  AND c.relname = ANY (%(tables)s::text[])
  AND (c.reltuples < 0 OR s.n_mod_since_analyze > 0.1 * c.reltuples + 1000)
ORDER BY c.relname;
