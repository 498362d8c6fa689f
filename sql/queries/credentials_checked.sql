-- The outcome of `check-credentials` for an organization's key: when, and the (safe, one-line) error if any.
INSERT INTO organization_services (organization_id, service, last_validated_at, last_validation_error)
VALUES (%(org)s, %(service)s, now(), %(error)s)
ON CONFLICT (organization_id, service) DO UPDATE
SET last_validated_at = now(), last_validation_error = %(error)s, updated_at = now();
