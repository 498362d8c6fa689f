-- Every stored token, locked until the rotation's transaction re-encrypts them all with the first key.
SELECT id, organization_id, token FROM api_credentials ORDER BY organization_id, service FOR UPDATE;
