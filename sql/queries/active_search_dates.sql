-- as_of moved: every active row carries the new window bounds, as a full recompute would write them.
UPDATE active_patients
SET search_date_from = %(window_from)s, search_date_to = %(as_of)s, updated_at = now()
WHERE organization_id = %(org)s
  AND (search_date_from, search_date_to) IS DISTINCT FROM (%(window_from)s::timestamptz, %(as_of)s::timestamptz)
