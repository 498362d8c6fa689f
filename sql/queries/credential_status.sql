-- Per organization: whether a Cliniko key is stored, and the last `check-credentials` result.
SELECT s.organization_id, c.id IS NOT NULL AS credentials_stored, s.last_validated_at, s.last_validation_error
FROM organization_services s
LEFT JOIN api_credentials c ON c.organization_id = s.organization_id AND c.service = s.service
WHERE s.service = %(service)s;
