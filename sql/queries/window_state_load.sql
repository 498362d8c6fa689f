-- The window pass's cursor (Cliniko's clock as the last window read began), the start of the window it read and the
-- clock of its class list.
SELECT cursor_updated_at, window_from, window_classes_since FROM sync_state
WHERE organization_id = %(org)s AND stream = 'window';
