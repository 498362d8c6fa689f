-- The organization's active patients as of %(as_of)s (DESIGN §2), into a temp table dropped at commit.
-- Qualifying: an individual appointment or a group attendance that is not cancelled, archived or deleted (in Cliniko,
-- or removed from the mirror by a full pass), of a patient who is not archived, merged or deleted.
CREATE TEMP TABLE active_now ON COMMIT DROP AS
WITH qualifying AS (
    SELECT a.patient_id, a.id, 'individual' AS kind, a.starts_at, a.ends_at,
           a.appointment_type_id, a.practitioner_id, a.did_not_arrive
    FROM cliniko_individual_appointments a
    WHERE a.organization_id = %(org)s AND a.patient_id IS NOT NULL AND a.starts_at IS NOT NULL
      AND a.cancelled_at IS NULL AND a.archived_at IS NULL AND a.deleted_at IS NULL AND a.removed_at IS NULL
    UNION ALL
    SELECT t.patient_id, t.id, 'group', g.starts_at, g.ends_at,
           g.appointment_type_id, g.practitioner_id, t.did_not_arrive
    FROM cliniko_attendees t
    JOIN cliniko_group_appointments g ON g.organization_id = t.organization_id AND g.id = t.group_appointment_id
    WHERE t.organization_id = %(org)s AND t.patient_id IS NOT NULL AND g.starts_at IS NOT NULL
      AND t.cancelled_at IS NULL AND t.archived_at IS NULL AND t.deleted_at IS NULL AND t.removed_at IS NULL
      AND g.archived_at IS NULL AND g.deleted_at IS NULL AND g.removed_at IS NULL
), eligible_patients AS (
    SELECT p.id
    FROM cliniko_patients p
    WHERE p.organization_id = %(org)s
      AND p.archived_at IS NULL AND p.merged_at IS NULL AND p.deleted_at IS NULL AND p.removed_at IS NULL
), described AS (
    SELECT q.patient_id, q.starts_at, q.id,
           q.starts_at >= %(window_from)s AND q.starts_at <= %(as_of)s AS is_recent,
           q.starts_at > %(as_of)s AS is_upcoming,
           jsonb_build_object(
               'id', q.id,
               'kind', q.kind,
               'starts_at', to_char(q.starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'ends_at', to_char(q.ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'appointment_type', at.name,
               'practitioner', pr.name,
               'did_not_arrive', q.did_not_arrive
           ) AS details
    FROM qualifying q
    JOIN eligible_patients e ON e.id = q.patient_id
    LEFT JOIN cliniko_appointment_types at ON at.organization_id = %(org)s AND at.id = q.appointment_type_id
    LEFT JOIN cliniko_practitioners pr ON pr.organization_id = %(org)s AND pr.id = q.practitioner_id
), per_patient AS (
    SELECT patient_id,
           count(*) FILTER (WHERE is_recent) AS recent_appointment_count,
           count(*) FILTER (WHERE is_upcoming) AS upcoming_appointment_count,
           count(*) AS total_appointment_count,
           max(starts_at) FILTER (WHERE starts_at <= %(as_of)s) AS last_appointment_date,
           min(starts_at) FILTER (WHERE is_upcoming) AS next_appointment_date,
           COALESCE(jsonb_agg(details ORDER BY starts_at, id) FILTER (WHERE is_recent), '[]') AS recent_appointments,
           COALESCE(jsonb_agg(details ORDER BY starts_at, id) FILTER (WHERE is_upcoming), '[]')
               AS upcoming_appointments
    FROM described
    GROUP BY patient_id
)
SELECT *
FROM per_patient
WHERE recent_appointment_count > 0 OR (%(include_upcoming)s AND upcoming_appointment_count > 0)
