-- Which of these patient ids the mirror does not hold yet (the window pass fetches only those).
SELECT id FROM unnest(%(ids)s::text[]) AS wanted (id)
WHERE NOT EXISTS (SELECT 1 FROM cliniko_patients p WHERE p.organization_id = %(org)s AND p.id = wanted.id);
