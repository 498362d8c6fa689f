-- The JSON details of the active patients' appointments from the window's start on (recent and upcoming);
-- appointments: the qualifying appointments of the patients in active_now (active.py).
CREATE TEMP TABLE active_details ON COMMIT DROP AS
WITH described AS (
    SELECT q.patient_id, q.starts_at, q.id, q.starts_at <= %(as_of)s AS is_recent,
           jsonb_build_object(
               'id', q.id,
               'kind', q.kind,
               'starts_at', to_char(q.starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'ends_at', to_char(q.ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'appointment_type', at.name,
               'practitioner', pr.name,
               'business', b.name,
               'did_not_arrive', q.did_not_arrive
           ) AS details
    FROM {appointments}
    LEFT JOIN cliniko_appointment_types at ON at.organization_id = q.organization_id AND at.id = q.appointment_type_id
    LEFT JOIN cliniko_practitioners pr ON pr.organization_id = q.organization_id AND pr.id = q.practitioner_id
    LEFT JOIN cliniko_businesses b ON b.organization_id = q.organization_id AND b.id = q.business_id
    WHERE q.organization_id = %(org)s AND q.starts_at >= %(window_from)s
)
SELECT patient_id,
       COALESCE(jsonb_agg(details ORDER BY starts_at, id) FILTER (WHERE is_recent), '[]') AS recent_appointments,
       COALESCE(jsonb_agg(details ORDER BY starts_at, id) FILTER (WHERE NOT is_recent), '[]') AS upcoming_appointments
FROM described
GROUP BY patient_id;
