-- The history is complete: the window pass's cursor is no longer needed (and must not age in `status`).
DELETE FROM sync_state WHERE organization_id = %(org)s AND stream = 'window';
