-- The window pass's cursor: the newest updated_at (as Cliniko shows it) among the records the window reads saw.
SELECT cursor_updated_at FROM sync_state WHERE organization_id = %(org)s AND stream = 'window';
