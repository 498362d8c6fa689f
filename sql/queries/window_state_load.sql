-- The window pass's cursor (Cliniko's clock as the last window read began) and the start of the window it read.
SELECT cursor_updated_at, window_from FROM sync_state WHERE organization_id = %(org)s AND stream = 'window';
