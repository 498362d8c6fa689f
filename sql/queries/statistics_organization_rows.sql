-- How many rows an organization has in one table, counted up to %(enough)s only (an index range, never the table):
-- enough to tell a planner estimate of "about none" from the truth. {table} is one of active.RECOMPUTE_TABLES.
SELECT count(*) AS rows FROM (SELECT 1 FROM {table} WHERE organization_id = %(org)s LIMIT %(enough)s) t;
