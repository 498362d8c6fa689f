-- A new organization (its id is the slug every other table keys on).
INSERT INTO organizations (id, name, country, time_zone, window_days, include_upcoming, sync_interval,
                           full_sync_interval)
VALUES (%(id)s, %(name)s, %(country)s, %(time_zone)s, %(window_days)s, %(include_upcoming)s, %(sync_interval)s,
        %(full_sync_interval)s)
RETURNING *;
