"""The emulator's record types: slotted objects with Cliniko's field names, times as epoch seconds, ids as ints.

Relations are kept as ids (`patient_id`, `booking_id`, ...) and become link objects only when rendered.
`created_at`/`updated_at` are stored as float epoch seconds with a hidden microsecond fraction (as Rails on
PostgreSQL stores them) and rendered in whole seconds, so filters and sorts see finer values than clients do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def to_epoch(moment: datetime) -> int:
    """Whole epoch seconds of an aware datetime (naive ones are refused: the clinic runs on UTC)."""
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return int(moment.timestamp())


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


MICRO = 1_000_000


def with_fraction(whole: int, micros: int) -> float:
    """A stored timestamp: whole epoch seconds plus `micros` microseconds (0..999999)."""
    return (whole * MICRO + micros) / MICRO


def micros_of(seconds: float) -> int:
    """Epoch microseconds of a stored timestamp (exact: doubles hold today's epochs to well under 1 µs)."""
    return round(seconds * MICRO)


def whole_second(seconds: float) -> int:
    """The second a stored timestamp is shown as (the fraction truncated, as Cliniko renders it)."""
    return micros_of(seconds) // MICRO


def iso(seconds: float | None) -> str | None:
    """Cliniko's timestamp format, `YYYY-MM-DDTHH:MM:SSZ` (any stored fraction is truncated, never rounded)."""
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole_second(seconds)))


def iso_micro(seconds: float | None) -> str | None:
    """The same moment with its stored fraction, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (a quirk some servers have)."""
    if seconds is None:
        return None
    micros = micros_of(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(micros // MICRO)) + f".{micros % MICRO:06d}Z"


@dataclass(slots=True, eq=False)
class Patient:
    id: int
    first_name: str
    last_name: str
    preferred_first_name: str | None
    title: str | None
    email: str | None
    # (phone_type, number) pairs; None means the API's `patient_phone_numbers: null`.
    patient_phone_numbers: list[tuple[str, str]] | None
    date_of_birth: str | None
    sex: str | None
    address_1: str | None
    city: str | None
    state: str | None
    post_code: str | None
    country_code: str | None
    time_zone: str | None
    accepted_privacy_policy: bool | None
    old_reference_id: str | None
    created_at: float
    updated_at: float
    archived_at: float | None = None
    deleted_at: float | None = None
    merged_at: float | None = None
    merged_with_patient_id: int | None = None
    # Fields set through edit_patient that have no slot of their own (rendered as given).
    extra: dict[str, Any] | None = None


@dataclass(slots=True, eq=False)
class IndividualAppointment:
    id: int
    patient_id: int
    practitioner_id: int
    appointment_type_id: int
    business_id: int
    starts_at: int
    ends_at: int
    created_at: float
    updated_at: float
    did_not_arrive: bool = False
    patient_arrived: bool | None = None
    cancelled_at: float | None = None
    cancellation_reason: int | None = None
    cancellation_note: str | None = None
    notes: str | None = None
    telehealth_url: str | None = None
    archived_at: float | None = None
    deleted_at: float | None = None


@dataclass(slots=True, eq=False)
class GroupAppointment:
    id: int
    practitioner_id: int
    appointment_type_id: int
    business_id: int
    starts_at: int
    ends_at: int
    max_attendees: int
    created_at: float
    updated_at: float
    notes: str | None = None
    telehealth_url: str | None = None
    archived_at: float | None = None
    deleted_at: float | None = None
    attendee_ids: list[int] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Attendee:
    id: int
    patient_id: int
    booking_id: int
    created_at: float
    updated_at: float
    arrived: bool | None = None
    cancelled_at: float | None = None
    cancellation_reason: int | None = None
    cancellation_note: str | None = None
    archived_at: float | None = None
    deleted_at: float | None = None


@dataclass(slots=True, eq=False)
class AppointmentType:
    id: int
    name: str
    duration_in_minutes: int
    category: str
    max_attendees: int | None
    created_at: float
    updated_at: float
    archived_at: float | None = None
    deleted_at: float | None = None


@dataclass(slots=True, eq=False)
class Practitioner:
    id: int
    title: str | None
    first_name: str
    last_name: str
    designation: str
    created_at: float
    updated_at: float
    # Cliniko makes practitioners inactive rather than archiving them: no archived_at/deleted_at on this resource.
    active: bool = True


@dataclass(slots=True, eq=False)
class Business:
    id: int
    business_name: str
    time_zone_identifier: str
    country_code: str
    created_at: float
    updated_at: float
    archived_at: float | None = None
    deleted_at: float | None = None


Record = Patient | IndividualAppointment | GroupAppointment | Attendee | AppointmentType | Practitioner | Business
