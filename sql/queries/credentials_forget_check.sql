-- A new key has not been checked yet: forget the previous key's validation result.
INSERT INTO organization_services (organization_id, service) VALUES (%(org)s, %(service)s)
ON CONFLICT (organization_id, service) DO UPDATE
SET last_validated_at = NULL, last_validation_error = NULL, updated_at = now();
