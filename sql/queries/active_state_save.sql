-- Remember what this recompute was done for: the next one recomputes incrementally from here.
INSERT INTO active_recompute_state AS s (organization_id, as_of, window_days, include_upcoming, recompute_all,
                                         recomputed_at)
VALUES (%(org)s, %(as_of)s, %(window_days)s, %(include_upcoming)s, false, now())
ON CONFLICT (organization_id) DO UPDATE SET
    as_of = EXCLUDED.as_of, window_days = EXCLUDED.window_days, include_upcoming = EXCLUDED.include_upcoming,
    recompute_all = false, recomputed_at = now()
