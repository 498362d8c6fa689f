"""Records as Cliniko's JSON: string ids, `YYYY-MM-DDTHH:MM:SSZ` times, relations as link objects on the base URL.

Every renderer takes the server's Quirks (default: none), which can change how ids and times come out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from cliniko_sync.emulator.dataset import CLINICAL_NOTES, Clinic
from cliniko_sync.emulator.quirks import Quirks
from cliniko_sync.emulator.records import (
    AppointmentType,
    Attendee,
    Business,
    GroupAppointment,
    IndividualAppointment,
    Patient,
    Practitioner,
    iso,
    iso_micro,
)

_NOT_DIGITS = re.compile(r"\D")
ATTENDEES_OF_PATIENT = f"{quote('q[]')}={quote('patient_id:=')}"


STRICT = Quirks()


def _stamps(quirks: Quirks) -> Callable[[float | None], str | None]:
    return iso_micro if quirks.fractional_seconds_rendered else iso


def _link(url: str) -> dict[str, Any]:
    return {"links": {"self": url}}


def normalized_number(number: str) -> str | None:
    """Cliniko-style digits-only number with the country code (Australian local numbers get 61)."""
    digits = _NOT_DIGITS.sub("", number)
    if len(digits) < 6:
        return None
    if number.strip().startswith("+"):
        return digits
    return "61" + digits[1:] if digits.startswith("0") else digits


def _clinical_fields(record: Patient) -> dict[str, Any]:
    """Clinical free text and identifiers the sync must drop (DESIGN §6), from small synthetic pools."""
    note = CLINICAL_NOTES[record.id % len(CLINICAL_NOTES)]
    goal = {"sections": [{"name": "Synthetic", "fields": [{"name": "Goal", "value": "Run 5 km"}]}]}
    return {
        "notes": note,
        "appointment_notes": note and "Synthetic: prefers morning appointments.",
        "occupation": "Synthetic occupation" if record.id % 3 == 0 else None,
        "medicare": f"2{record.id % 10**9:09d}" if record.id % 4 == 0 else None,
        "medicare_reference_number": "1" if record.id % 4 == 0 else None,
        "dva_card_number": None,
        "emergency_contact": "Synthetic Contact 0400 000 000" if record.id % 5 == 0 else None,
        "custom_fields": goal if record.id % 7 == 0 else None,
    }


def patient(record: Patient, base: str, clinic: Clinic, quirks: Quirks = STRICT) -> dict[str, Any]:
    iso = _stamps(quirks)
    patient_id = str(record.id)
    phones = record.patient_phone_numbers
    body: dict[str, Any] = {
        "id": patient_id,
        "title": record.title,
        "first_name": record.first_name,
        "last_name": record.last_name,
        "preferred_first_name": record.preferred_first_name,
        "label": f"{record.first_name} {record.last_name}",
        "email": record.email,
        "date_of_birth": record.date_of_birth,
        "sex": record.sex,
        "gender_identity": None,
        "pronouns": None,
        "patient_phone_numbers": None
        if phones is None
        else [
            {"phone_type": kind, "number": number, "normalized_number": normalized_number(number)}
            for kind, number in phones
        ],
        "address_1": record.address_1,
        "address_2": None,
        "address_3": None,
        "city": record.city,
        "state": record.state,
        "post_code": record.post_code,
        "country_code": record.country_code,
        "time_zone": record.time_zone,
        "accepted_privacy_policy": record.accepted_privacy_policy,
        "accepted_email_marketing": False,
        "accepted_sms_marketing": False,
        "reminder_type": "SMS & Email",
        **_clinical_fields(record),
        "old_reference_id": record.old_reference_id,
        "archived_at": iso(record.archived_at),
        "deleted_at": iso(record.deleted_at),
        "merged_at": iso(record.merged_at),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "merged_with_patient": _link(f"{base}/patients/{record.merged_with_patient_id}")
        if record.merged_with_patient_id
        else None,
        "appointments": _link(f"{base}/patients/{patient_id}/appointments"),
        "attendees": _link(f"{base}/attendees?{ATTENDEES_OF_PATIENT}{patient_id}"),
        "invoices": _link(f"{base}/patients/{patient_id}/invoices"),
        "medical_alerts": _link(f"{base}/patients/{patient_id}/medical_alerts"),
        "relationships": _link(f"{base}/patients/{patient_id}/relationships"),
        "links": {"self": f"{base}/patients/{patient_id}"},
    }
    if record.extra:
        body.update(record.extra)
    return body


def _appointment_common(
    record: IndividualAppointment | GroupAppointment, base: str, path: str, appointment_id: str, quirks: Quirks
) -> dict[str, Any]:
    iso = _stamps(quirks)
    return {
        "id": appointment_id,
        "starts_at": iso(record.starts_at),
        "ends_at": iso(record.ends_at),
        "notes": record.notes,
        "telehealth_url": record.telehealth_url,
        "archived_at": iso(record.archived_at),
        "deleted_at": iso(record.deleted_at),
        "repeat_rule": None,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "practitioner": _link(f"{base}/practitioners/{record.practitioner_id}"),
        "appointment_type": _link(f"{base}/appointment_types/{record.appointment_type_id}"),
        "business": _link(f"{base}/businesses/{record.business_id}"),
        "conflicts": _link(f"{base}/{path}/{appointment_id}/conflicts"),
        "links": {"self": f"{base}/{path}/{appointment_id}"},
    }


def individual_appointment(
    record: IndividualAppointment, base: str, clinic: Clinic, quirks: Quirks = STRICT
) -> dict[str, Any]:
    iso = _stamps(quirks)
    appointment_id = str(record.id)
    patient_record = clinic.patients.records.get(record.patient_id)
    body = _appointment_common(record, base, "individual_appointments", appointment_id, quirks)
    body.update(
        {
            "patient_name": f"{patient_record.first_name} {patient_record.last_name}" if patient_record else None,
            "did_not_arrive": record.did_not_arrive,
            "patient_arrived": record.patient_arrived,
            "cancelled_at": iso(record.cancelled_at),
            "cancellation_reason": record.cancellation_reason,
            "cancellation_reason_description": None,
            "cancellation_note": record.cancellation_note,
            "email_reminder_sent": False,
            "sms_reminder_sent": False,
            "invoice_status": None,
            "treatment_note_status": None,
            "patient": _link(f"{base}/patients/{record.patient_id}"),
            "attendees": _link(f"{base}/individual_appointments/{appointment_id}/attendees"),
        }
    )
    return body


def group_appointment(record: GroupAppointment, base: str, clinic: Clinic, quirks: Quirks = STRICT) -> dict[str, Any]:
    appointment_id = str(record.id)
    body = _appointment_common(record, base, "group_appointments", appointment_id, quirks)
    body.update(
        {
            "max_attendees": record.max_attendees,
            "patient_ids": [int(i) for i in clinic.group_patient_ids(record)]
            if quirks.ids_as_numbers
            else clinic.group_patient_ids(record),
            "attendees": _link(f"{base}/group_appointments/{appointment_id}/attendees"),
        }
    )
    return body


def attendee(record: Attendee, base: str, clinic: Clinic, quirks: Quirks = STRICT) -> dict[str, Any]:
    iso = _stamps(quirks)
    attendee_id = str(record.id)
    body = {
        "id": attendee_id,
        "arrived": record.arrived,
        "cancelled_at": iso(record.cancelled_at),
        "cancellation_reason": record.cancellation_reason,
        "cancellation_reason_description": None,
        "cancellation_note": record.cancellation_note,
        "archived_at": iso(record.archived_at),
        "deleted_at": iso(record.deleted_at),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "patient": _link(f"{base}/patients/{record.patient_id}"),
        "booking": _link(f"{base}/bookings/{record.booking_id}"),
        "patient_case": None,
        "invoices": _link(f"{base}/attendees/{attendee_id}/invoices"),
        "links": {"self": f"{base}/attendees/{attendee_id}"},
    }
    if quirks.attendee_did_not_arrive:
        body["did_not_arrive"] = record.arrived is False
    return body


def appointment_type(record: AppointmentType, base: str, clinic: Clinic, quirks: Quirks = STRICT) -> dict[str, Any]:
    iso = _stamps(quirks)
    return {
        "id": str(record.id),
        "name": record.name,
        "category": record.category,
        "duration_in_minutes": record.duration_in_minutes,
        "max_attendees": record.max_attendees,
        "color": "#4a90d9",
        "online_payments_mode": "no_online_payment",
        "show_in_online_bookings": True,
        "archived_at": iso(record.archived_at),
        "deleted_at": iso(record.deleted_at),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "links": {"self": f"{base}/appointment_types/{record.id}"},
    }


def practitioner(record: Practitioner, base: str, clinic: Clinic, quirks: Quirks = STRICT) -> dict[str, Any]:
    iso = _stamps(quirks)
    return {
        "id": str(record.id),
        "title": record.title,
        "first_name": record.first_name,
        "last_name": record.last_name,
        "label": " ".join(part for part in (record.title, record.first_name, record.last_name) if part),
        "designation": record.designation,
        "active": record.active,
        "show_in_online_bookings": True,
        "user": None,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "links": {"self": f"{base}/practitioners/{record.id}"},
    }


def business(record: Business, base: str, clinic: Clinic, quirks: Quirks = STRICT) -> dict[str, Any]:
    iso = _stamps(quirks)
    return {
        "id": str(record.id),
        "business_name": record.business_name,
        "label": record.business_name,
        "country_code": record.country_code,
        "time_zone": "Sydney",
        "time_zone_identifier": record.time_zone_identifier,
        "show_in_online_bookings": True,
        "appointment_type_ids": [int(i) if quirks.ids_as_numbers else str(i) for i in clinic.appointment_types.records],
        "archived_at": iso(record.archived_at),
        "deleted_at": iso(record.deleted_at),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "links": {"self": f"{base}/businesses/{record.id}"},
    }


def render(resource: str, record: Any, base: str, clinic: Clinic, quirks: Quirks = STRICT) -> dict[str, Any]:
    """One record as the API shows it, ids as numbers with the ids_as_numbers quirk."""
    body = RENDERERS[resource](record, base, clinic, quirks)
    if quirks.ids_as_numbers:
        body["id"] = int(body["id"])
    return body


RENDERERS: dict[str, Callable[..., dict[str, Any]]] = {
    "patients": patient,
    "individual_appointments": individual_appointment,
    "group_appointments": group_appointment,
    "attendees": attendee,
    "appointment_types": appointment_type,
    "practitioners": practitioner,
    "businesses": business,
}
