-- One Fernet token per (organization, service): the key, its shard and its API URL, encrypted together.
INSERT INTO api_credentials (organization_id, service, token) VALUES (%(org)s, %(service)s, %(token)s)
ON CONFLICT (organization_id, service) DO UPDATE SET token = EXCLUDED.token, updated_at = now();
