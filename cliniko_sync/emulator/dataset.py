"""A seeded synthetic clinic (patients, appointments, group classes) and the mutations tests use to change it.

Everything here is invented: names, phones and emails are drawn from small pools and reserved example domains.
"""

from __future__ import annotations

import math
import random
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any

from cliniko_sync.emulator.records import (
    AppointmentType,
    Attendee,
    Business,
    GroupAppointment,
    IndividualAppointment,
    Patient,
    Practitioner,
    from_epoch,
    micros_of,
    to_epoch,
    whole_second,
    with_fraction,
)
from cliniko_sync.emulator.store import Table

MICRO = 1_000_000
MINUTE = 60
HOUR = 3600
DAY = 86400
YEAR = 365 * DAY

DEFAULT_PATIENTS = 630
APPOINTMENTS_PER_PATIENT = 10  # the default size: about 6,300 appointments for 630 patients
CURRENT_SHARE = 0.075  # patients in an ongoing course of treatment: ~47 of 630 are active in a 45-day window
ATTENDEE_SHARE = 0.12  # share of `appointments` that are group-class attendances
DESIGN_WINDOW = 45 * DAY  # the window the dataset is shaped around (DESIGN §2)

RESOURCES = (
    "patients",
    "individual_appointments",
    "group_appointments",
    "attendees",
    "appointment_types",
    "practitioners",
    "businesses",
)

FIRST_NAMES = (
    "Zoë", "Łukasz", "Chloé", "José", "Ngọc Anh", "Siobhán", "Björn", "Anaïs", "Renée", "Mia", "Jack", "Olivia",
    "Noah", "Aroha", "Priya", "Mohammed", "Wei", "Aisha", "Liam", "Charlotte", "François", "Søren", "İlkay", "Mateo",
    "Hana", "Tāne", "Amélie", "Oliver", "Isla", "Ethan", "Grace", "Lachlan", "Ruby", "Kai", "Matilda", "Dũng",
    "Saoirse", "Jürgen", "Ava", "Harper", "Cooper", "Ngaio", "Yusuf", "Mei", "Élodie", "Rhys", "Sienna", "Tomás",
)  # fmt: skip
LAST_NAMES = (
    "O'Connor", "Nguyễn", "Müller", "Smith", "Papadopoulos", "D'Angelo", "Kowalski", "Ó Súilleabháin", "García",
    "Lefèvre", "van der Berg", "Takahashi", "Singh", "Brown", "MacDonald", "Ng", "Lê", "Jørgensen", "Ramírez",
    "Williams", "Taylor", "Wilson", "Martin", "Anderson", "Thompson", "White", "Walker", "Harris", "Kaur", "Chen",
    "Wang", "Patel", "O'Brien", "Ryan", "Kelly", "Nowak", "Żak", "Öztürk", "Ferreira", "Đặng", "Te Whiti", "Hughes",
)  # fmt: skip
TITLES = ("Mr", "Ms", "Mrs", "Dr", "Mx", None, None, None)
EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "example.test", "mail.example.com")
CITIES = (("Sydney", "NSW", "2000"), ("Bondi", "NSW", "2026"), ("Melbourne", "VIC", "3000"), ("Hobart", "TAS", "7000"))
STREETS = ("Example St", "Sample Rd", "Placeholder Ave", "Fictional Pde", "Imaginary Lane")
CLINICAL_NOTES = (
    "Synthetic note: left knee pain after running, review in 2 weeks.",
    "Synthetic note: lower back stiffness, desk job.",
    "Synthetic note: post-op shoulder rehab, range improving.",
    None,
    None,
)
CANCELLATION_NOTES = ("Synthetic: feeling better", "Synthetic: away for work", "Synthetic: unwell", None)
CANCELLATION_REASONS = (10, 20, 30, 40, 50, 60)

# The clinic works 08:00-19:00 Sydney time, roughly 21:00-08:00 UTC: quarter-hour slots counted from 21:00 UTC.
FIRST_SLOT_OFFSET = -3 * HOUR
SLOTS_PER_DAY = 44

ASCII_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ı": "i", "ß": "ss"})

_PATIENT_SETTABLE = {
    f.name for f in dataclass_fields(Patient) if f.name not in {"id", "created_at", "updated_at", "extra"}
}


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(ASCII_FOLD))
    return "".join(ch for ch in folded if ch.isascii() and ch.isalnum())


class Clinic:
    """A clinic's records, its clock, and thread-safe mutations (the server reads while tests write)."""

    def __init__(
        self,
        *,
        now: int,
        seed: int,
        businesses: Iterable[Business],
        practitioners: Iterable[Practitioner],
        appointment_types: Iterable[AppointmentType],
        patients: Iterable[Patient],
        individual_appointments: Iterable[IndividualAppointment],
        group_appointments: Iterable[GroupAppointment],
        attendees: Iterable[Attendee],
        id_source: IdSource,
        appointment_attendees: Iterable[Attendee] = (),
    ) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self._clock = now
        # Shifts the timestamps mutations write, as if Cliniko's clock ran ahead of (or behind) the clinic's.
        self.clock_offset_seconds = 0
        self._ids = id_source
        # Individual appointments' attendee records draw ids from their own stream: the other ids stay as they were.
        self._attendee_ids = id_source.fork(seed * 7 + 5)
        self._rng = random.Random(seed * 7919 + 17)
        # Hidden sub-second fractions of new stamps come from their own stream, so they never shift other draws.
        self._fraction_rng = random.Random(seed * 104729 + 3)
        self.whole_seconds = False  # True: stamps carry no hidden fraction (stored == shown)
        self.patients: Table[Patient] = Table(patients, listed=lambda patient: patient.deleted_at is None)
        self.individual_appointments: Table[IndividualAppointment] = Table(
            individual_appointments, extra=("starts_at",)
        )
        self.group_appointments: Table[GroupAppointment] = Table(group_appointments, extra=("starts_at",))
        self.attendees: Table[Attendee] = Table(attendees, extra=("booking_id",))
        # The attendee record Cliniko keeps for every individual appointment (cliniko-api.md §4, Attendees): listed by
        # /attendees beside the group-class ones (self.attendees), unless drop_individual_attendees() was called.
        self.individual_attendees = True
        self.appointment_attendees: Table[Attendee] = Table(appointment_attendees, extra=("booking_id",))
        self._attendee_of = {record.booking_id: record for record in self.appointment_attendees.records.values()}
        self.appointment_types: Table[AppointmentType] = Table(appointment_types)
        self.practitioners: Table[Practitioner] = Table(practitioners)
        self.businesses: Table[Business] = Table(businesses)
        self.tables: dict[str, Table[Any]] = {name: getattr(self, name) for name in RESOURCES}

    # --- the clock -------------------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The clinic's clock (it moves only through advance_clock/set_clock)."""
        return from_epoch(self._clock)

    def advance_clock(self, delta: timedelta) -> datetime:
        with self.lock:
            self._clock += int(delta.total_seconds())
            return self.now

    def set_clock(self, moment: datetime) -> datetime:
        with self.lock:
            self._clock = to_epoch(moment)
            return self.now

    def _moment(self) -> float:
        """A new stored timestamp: the clinic clock's second plus a hidden fraction (none with whole_seconds)."""
        second = self._clock + self.clock_offset_seconds
        if self.whole_seconds:
            return second
        return with_fraction(second, self._fraction_rng.randrange(MICRO))

    def _stamp(self, table: Table[Any], record: Any) -> float:
        """Set a record's updated_at to the clinic clock and return it.

        Never backwards; with hidden fractions also strictly forwards (by at least 1 µs), as a later transaction's
        now() is on PostgreSQL, so every change moves the record in an updated_at crawl.
        """
        moment = self._moment()
        if self.whole_seconds:
            moment = max(record.updated_at, moment)
        elif micros_of(moment) <= micros_of(record.updated_at):
            moment = (micros_of(record.updated_at) + 1) / MICRO
        table.set_updated_at(record, moment)
        return moment

    def drop_fractions(self) -> None:
        """Truncate every stored created_at/updated_at to the shown second, and stamp whole seconds from now on."""
        with self.lock:
            self.whole_seconds = True
            for table in (*self.tables.values(), self.appointment_attendees):
                for record in table.records.values():
                    record.created_at = whole_second(record.created_at)
                    record.updated_at = whole_second(record.updated_at)
                table.reindex()

    def drop_individual_attendees(self) -> None:
        """No attendee records for individual appointments, now or later (the older reading of /attendees)."""
        with self.lock:
            self.individual_attendees = False
            self.appointment_attendees = Table((), extra=("booking_id",))
            self._attendee_of = {}

    def listed_tables(self, resource: str) -> tuple[Table[Any], ...]:
        """The tables a resource's list holds: /attendees lists the group-class attendees and the individual
        appointments' records."""
        if resource == "attendees" and self.appointment_attendees.records:
            return (self.attendees, self.appointment_attendees)
        return (self.tables[resource],)

    def stored(self, resource: str, record_id: int) -> Any:
        """A record of a resource's list by id, from whichever of its tables holds it."""
        for table in self.listed_tables(resource):
            if record_id in table.records:
                return table.records[record_id]
        raise KeyError(record_id)

    def _follow(self, appointment: IndividualAppointment) -> None:
        """An individual appointment changed: its attendee record follows (status, arrival) and is stamped."""
        record = self._attendee_of.get(appointment.id)
        if record is None:
            return
        _mirror_appointment(record, appointment)
        self._stamp(self.appointment_attendees, record)

    # --- lookups ---------------------------------------------------------------------------------------------

    def _find(self, table: Table[Any], record_id: str | int) -> Any:
        record = table.records.get(int(record_id))
        if record is None:
            raise KeyError(f"no record {record_id}")
        return record

    def touch(self, resource: str, record_id: str | int) -> None:
        """Bump a record's updated_at without changing anything else."""
        with self.lock:
            table = self.tables[resource]
            self._stamp(table, self._find(table, record_id))

    # --- patients --------------------------------------------------------------------------------------------

    def add_patient(self, *, first_name: str | None = None, last_name: str | None = None, **fields: Any) -> str:
        """Create a patient (random synthetic details unless given) and return its id."""
        with self.lock:
            moment = self._moment()
            patient = _new_patient(self._rng, self._ids.next(), moment)
            patient.first_name = first_name or patient.first_name
            patient.last_name = last_name or patient.last_name
            _set_patient_fields(patient, fields)
            self.patients.add(patient)
            return str(patient.id)

    def edit_patient(self, patient_id: str | int, **fields: Any) -> None:
        """Change fields (slots or any other API field) and bump updated_at."""
        with self.lock:
            patient = self._find(self.patients, patient_id)
            _set_patient_fields(patient, fields)
            self._stamp(self.patients, patient)

    def archive_patient(self, patient_id: str | int) -> None:
        with self.lock:
            patient = self._find(self.patients, patient_id)
            patient.archived_at = self._stamp(self.patients, patient)

    def merge_patient(self, patient_id: str | int, into_id: str | int) -> None:
        """Merge a patient into another: Cliniko archives the merged record and links it to the survivor."""
        with self.lock:
            patient = self._find(self.patients, patient_id)
            survivor = self._find(self.patients, into_id)
            moment = self._stamp(self.patients, patient)
            patient.merged_at = moment
            patient.archived_at = patient.archived_at or moment
            patient.merged_with_patient_id = survivor.id

    def delete_patient(self, patient_id: str | int) -> None:
        """Delete a patient: gone from every listing and from GET by id (Cliniko has no deleted-patient filter)."""
        with self.lock:
            patient = self._find(self.patients, patient_id)
            moment = self._stamp(self.patients, patient)
            self.patients.unlist(patient)
            patient.deleted_at = moment

    # --- appointments ----------------------------------------------------------------------------------------

    def book(
        self,
        patient_id: str | int,
        starts_at: datetime,
        *,
        ends_at: datetime | None = None,
        appointment_type_id: str | int | None = None,
        practitioner_id: str | int | None = None,
        business_id: str | int | None = None,
    ) -> str:
        """Book an individual appointment and return its id."""
        with self.lock:
            patient = self._find(self.patients, patient_id)
            slot, _ = self._slot(starts_at, ends_at, appointment_type_id, practitioner_id, business_id, group=False)
            appointment = IndividualAppointment(patient_id=patient.id, **slot)
            self.individual_appointments.add(appointment)
            if self.individual_attendees:
                record = _attendee_for(appointment, self._attendee_ids.next())
                self.appointment_attendees.add(record)
                self._attendee_of[appointment.id] = record
            return str(appointment.id)

    def _slot(
        self,
        starts_at: datetime,
        ends_at: datetime | None,
        appointment_type_id: str | int | None,
        practitioner_id: str | int | None,
        business_id: str | int | None,
        *,
        group: bool,
    ) -> tuple[dict[str, Any], AppointmentType]:
        """A new booking's common fields (a new id, its type, practitioner, business, times, stamps) and its type."""
        kind = self._reference(self.appointment_types, appointment_type_id, group=group)
        start = to_epoch(starts_at)
        moment = self._moment()
        fields = {
            "id": self._ids.next(),
            "practitioner_id": self._reference(self.practitioners, practitioner_id).id,
            "appointment_type_id": kind.id,
            "business_id": self._reference(self.businesses, business_id).id,
            "starts_at": start,
            "ends_at": to_epoch(ends_at) if ends_at else start + kind.duration_in_minutes * MINUTE,
            "created_at": moment,
            "updated_at": moment,
        }
        return fields, kind

    def _reference(self, table: Table[Any], record_id: str | int | None, *, group: bool | None = None) -> Any:
        if record_id is not None:
            return self._find(table, record_id)
        for record in table.iter_listed():
            usable = getattr(record, "archived_at", None) is None and getattr(record, "active", True)
            if usable and (group is None or (record.max_attendees is not None) == group):
                return record
        raise KeyError(f"no usable record in {table!r}")

    def cancel_appointment(self, appointment_id: str | int, *, reason: int = 50) -> None:
        with self.lock:
            appointment = self._find(self.individual_appointments, appointment_id)
            appointment.cancelled_at = self._stamp(self.individual_appointments, appointment)
            appointment.cancellation_reason = reason
            self._follow(appointment)

    def mark_did_not_arrive(self, appointment_id: str | int) -> None:
        with self.lock:
            appointment = self._find(self.individual_appointments, appointment_id)
            self._stamp(self.individual_appointments, appointment)
            appointment.did_not_arrive = True
            appointment.patient_arrived = False
            self._follow(appointment)

    def archive_appointment(self, appointment_id: str | int) -> None:
        with self.lock:
            appointment = self._find(self.individual_appointments, appointment_id)
            appointment.archived_at = self._stamp(self.individual_appointments, appointment)
            self._follow(appointment)

    def delete_appointment(self, appointment_id: str | int) -> None:
        with self.lock:
            appointment = self._find(self.individual_appointments, appointment_id)
            appointment.deleted_at = self._stamp(self.individual_appointments, appointment)
            self._follow(appointment)

    # --- group classes ---------------------------------------------------------------------------------------

    def add_attendee(self, group_id: str | int, patient_id: str | int) -> str:
        """Add a patient to a group class (the class's patient_ids change, so it is updated too)."""
        with self.lock:
            group = self._find(self.group_appointments, group_id)
            patient = self._find(self.patients, patient_id)
            moment = self._stamp(self.group_appointments, group)
            attendee = Attendee(
                id=self._ids.next(), patient_id=patient.id, booking_id=group.id, created_at=moment, updated_at=moment
            )
            group.attendee_ids.append(attendee.id)
            self.attendees.add(attendee)
            return str(attendee.id)

    def add_class(self, starts_at: datetime, *, appointment_type_id: str | int | None = None) -> str:
        """Schedule a group class (no attendees yet) and return its id."""
        with self.lock:
            slot, kind = self._slot(starts_at, None, appointment_type_id, None, None, group=True)
            group = GroupAppointment(max_attendees=kind.max_attendees or 1, **slot)
            self.group_appointments.add(group)
            return str(group.id)

    def move_class(self, group_id: str | int, starts_at: datetime) -> None:
        """Reschedule a group class (same length; its attendees stay as they were, their updated_at too)."""
        with self.lock:
            group = self._find(self.group_appointments, group_id)
            start = to_epoch(starts_at)
            group.ends_at = start + group.ends_at - group.starts_at
            self.group_appointments.set_field(group, "starts_at", start)
            self._stamp(self.group_appointments, group)

    def delete_class(self, group_id: str | int) -> None:
        """Delete a group class (listed with deleted_at:*; its attendees stay as they were)."""
        with self.lock:
            group = self._find(self.group_appointments, group_id)
            group.deleted_at = self._stamp(self.group_appointments, group)

    def cancel_attendee(self, attendee_id: str | int, *, reason: int = 50) -> None:
        with self.lock:
            attendee = self._find(self.attendees, attendee_id)
            attendee.cancelled_at = self._stamp(self.attendees, attendee)
            attendee.cancellation_reason = reason
            self._stamp(self.group_appointments, self._find(self.group_appointments, attendee.booking_id))

    def group_patient_ids(self, group: GroupAppointment) -> list[str]:
        """A class's `patient_ids`: its attendees that are not cancelled, archived or deleted."""
        attendees = self.attendees.records
        return [
            str(attendee.patient_id)
            for attendee in (attendees[attendee_id] for attendee_id in group.attendee_ids)
            if attendee.cancelled_at is None and attendee.archived_at is None and attendee.deleted_at is None
        ]


def _mirror_appointment(record: Attendee, appointment: IndividualAppointment) -> None:
    """An individual appointment's attendee record takes its status from the appointment; `arrived` follows
    `did_not_arrive` (false when the patient did not arrive, else the appointment's own arrival flag)."""
    record.cancelled_at = appointment.cancelled_at
    record.cancellation_reason = appointment.cancellation_reason
    record.archived_at = appointment.archived_at
    record.deleted_at = appointment.deleted_at
    record.arrived = False if appointment.did_not_arrive else appointment.patient_arrived


def _attendee_for(appointment: IndividualAppointment, attendee_id: int) -> Attendee:
    """The attendee record of an individual appointment: the appointment is its booking, same patient, same stamps."""
    record = Attendee(
        id=attendee_id,
        patient_id=appointment.patient_id,
        booking_id=appointment.id,
        created_at=appointment.created_at,
        updated_at=appointment.updated_at,
    )
    _mirror_appointment(record, appointment)
    return record


def _set_patient_fields(patient: Patient, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        if name in _PATIENT_SETTABLE:
            setattr(patient, name, value)
        elif name in {"id", "created_at", "updated_at"}:
            raise ValueError(f"{name} cannot be edited")
        else:
            patient.extra = {**(patient.extra or {}), name: value}


class IdSource:
    """Unique 19-digit ids, random like Cliniko's (so id order is not creation order)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[int] = set()

    def fork(self, seed: int) -> IdSource:
        """Another source of ids with its own random stream, never repeating an id of this one."""
        forked = IdSource(random.Random(seed))
        forked._used = self._used
        return forked

    def next(self) -> int:
        while True:
            candidate = self._rng.randrange(10**18, 9 * 10**18)
            if candidate not in self._used:
                self._used.add(candidate)
                return candidate


def active_patient_ids(
    clinic: Clinic, as_of: datetime, window_days: int = 45, include_upcoming: bool = False
) -> set[str]:
    """DESIGN §2's active patients, by brute force over the clinic's own records (the oracle for sync tests)."""
    end = to_epoch(as_of)
    start = end - window_days * DAY
    with clinic.lock:
        eligible = {
            patient.id
            for patient in clinic.patients.records.values()
            if patient.archived_at is None and patient.merged_at is None and patient.deleted_at is None
        }

        def counts(starts_at: int) -> bool:
            return start <= starts_at <= end or (include_upcoming and starts_at > end)

        active = {
            appointment.patient_id
            for appointment in clinic.individual_appointments.records.values()
            if appointment.cancelled_at is None
            and appointment.archived_at is None
            and appointment.deleted_at is None
            and counts(appointment.starts_at)
        }
        groups = clinic.group_appointments.records
        for attendee in clinic.attendees.records.values():
            if attendee.cancelled_at is not None or attendee.archived_at is not None or attendee.deleted_at is not None:
                continue
            group = groups[attendee.booking_id]
            if group.archived_at is None and group.deleted_at is None and counts(group.starts_at):
                active.add(attendee.patient_id)
    return {str(patient_id) for patient_id in active & eligible}


# --- generation ------------------------------------------------------------------------------------------------


def generate_clinic(
    *, patients: int = DEFAULT_PATIENTS, appointments: int | None = None, seed: int = 1, now: datetime | None = None
) -> Clinic:
    """A synthetic clinic, identical for the same arguments.

    `appointments` is the total of individual appointments and group-class attendances (default 10 per patient).
    About 7.5 % of patients are in a course of treatment that makes them active in a 45-day window ending at `now`.
    """
    if patients < 0 or (appointments is not None and appointments < 0):
        raise ValueError("sizes must not be negative")
    moment = now.astimezone(UTC) if now else datetime.now(UTC)
    total = patients * APPOINTMENTS_PER_PATIENT if appointments is None else appointments
    return _Generator(random.Random(seed), seed, to_epoch(moment.replace(microsecond=0)), patients, total).build()


def _new_patient(rng: random.Random, patient_id: int, created_at: float) -> Patient:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, state, post_code = rng.choice(CITIES)
    return Patient(
        id=patient_id,
        first_name=first,
        last_name=last,
        preferred_first_name=rng.choice((None, None, None, None, first.split()[0][:3])),
        title=rng.choice(TITLES),
        email=_email(rng, first, last),
        patient_phone_numbers=_phones(rng),
        date_of_birth=_birth_date(rng),
        sex=rng.choice(("Female", "Male", None)),
        address_1=f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
        city=city,
        state=state,
        post_code=post_code,
        country_code="AU",
        time_zone=rng.choice(("Australia/Sydney", "Australia/Sydney", "Australia/Melbourne", None)),
        accepted_privacy_policy=rng.choice((True, True, False, None)),
        old_reference_id=None,
        created_at=created_at,
        updated_at=created_at,
    )


def _email(rng: random.Random, first: str, last: str) -> str | None:
    roll = rng.random()
    if roll < 0.1:
        return None
    local = f"{_ascii(first)}.{_ascii(last)}{rng.randint(1, 9999)}"
    address = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    if roll < 0.25:
        return address.title()  # people type their addresses in every case
    if roll < 0.3:
        return address.upper()
    return address.lower()


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def _mobile(rng: random.Random) -> str:
    digits = "4" + _digits(rng, 8)
    if rng.random() < 0.25:
        return f"+61 {digits[:3]} {digits[3:6]} {digits[6:]}"
    if rng.random() < 0.2:
        return "0" + digits
    return f"0{digits[:3]} {digits[3:6]} {digits[6:]}"


def _landline(rng: random.Random) -> str:
    area = rng.choice("2378")
    digits = rng.choice("3456789") + _digits(rng, 7)
    if rng.random() < 0.5:
        return f"(0{area}) {digits[:4]} {digits[4:]}"
    return f"0{area} {digits[:4]} {digits[4:]}"


def _foreign(rng: random.Random) -> str:
    return rng.choice(
        (
            f"+44 20 7946 0{_digits(rng, 3)}",  # UK drama range
            f"+1 (555) 01{_digits(rng, 2)}-{_digits(rng, 4)}",  # NANP fictional range
            f"+64 21 555 {_digits(rng, 4)}",
            f"+49 30 {_digits(rng, 8)}",
        )
    )


JUNK_PHONES = ("call mum", "n/a", "0412", "ask at desk", "-", "+61")


def _phones(rng: random.Random) -> list[tuple[str, str]] | None:
    roll = rng.random()
    if roll < 0.04:
        return None
    if roll < 0.08:
        return []
    phones: list[tuple[str, str]] = []
    if roll < 0.85:
        phones.append(("Mobile", _mobile(rng)))
    elif roll < 0.92:
        phones.append(("Home", _landline(rng)))
    elif roll < 0.96:
        phones.append((rng.choice(("Mobile", "Other")), _foreign(rng)))
    else:
        phones.append((rng.choice(("Mobile", "Other", "Home")), rng.choice(JUNK_PHONES)))
    extra = rng.random()
    if extra < 0.15:
        phones.append(("Work", _landline(rng)))
    elif extra < 0.2:
        phones.append(("Home", _landline(rng)))
    elif extra < 0.22:
        phones.append(("Fax", _landline(rng)))
    if len(phones) > 1 and rng.random() < 0.3:
        phones.reverse()  # the mobile is not always first
    return phones


def _birth_date(rng: random.Random) -> str | None:
    if rng.random() < 0.05:
        return None
    return f"{rng.randint(1935, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _crowd_seconds(rng: random.Random, records: list[Any], now: int) -> None:
    """A few small crowds: 2-5 records changed in the same second (a receptionist's quick edits), besides the bulk
    import's hundreds. Each record moves forward only (to the crowd's latest second), so nothing goes back in time."""
    if len(records) < 10:
        return
    for _ in range(max(3, len(records) // 400)):
        crowd = rng.sample(records, rng.randint(2, 5))
        second = min(now, max(record.updated_at for record in crowd))
        for record in crowd:
            record.updated_at = max(record.updated_at, second)


def _hide_fractions(rng: random.Random, records: list[Any]) -> None:
    """Give created_at/updated_at a hidden microsecond fraction, as PostgreSQL stores them.

    A record never changed since it was created keeps updated_at == created_at (one INSERT sets both); so the bulk
    import's records share one shown second but each has its own fraction, hence their own order inside it.
    """
    draw = rng.randrange
    for record in records:
        created = int(record.created_at)
        unchanged = record.updated_at == record.created_at
        record.created_at = with_fraction(created, draw(MICRO))
        record.updated_at = record.created_at if unchanged else with_fraction(int(record.updated_at), draw(MICRO))


class _Generator:
    """Builds one clinic. Patient roles decide the shape of each patient's history:

    current (an ongoing course: a qualifying appointment in the last 45 days), group_only (current, but only through
    a group class), upcoming (first booking in the future), lapsed (history ended more than 45 days ago), never.
    """

    def __init__(self, rng: random.Random, seed: int, now: int, patients: int, appointments: int) -> None:
        self.rng = rng
        self.seed = seed
        self.now = now
        self.patient_count = patients
        self.attendee_count = round(appointments * ATTENDEE_SHARE) if patients else 0
        self.individual_count = appointments - self.attendee_count if patients else 0
        self.ids = IdSource(rng)
        self.history_start = now - 6 * YEAR
        # The clinic moved to Cliniko about three years ago: one bulk import gave hundreds of records one updated_at.
        self.import_time = now - 3 * YEAR + rng.randrange(DAY)
        self.tie_size = min(patients * 6 // 10, max(260, patients // 10))

    # --- helpers ---

    def slot(self, moment: float) -> int:
        """Snap a moment to a random quarter-hour of that UTC day's opening hours."""
        day_start = int(moment) - int(moment) % DAY
        return day_start + FIRST_SLOT_OFFSET + self.rng.randrange(SLOTS_PER_DAY) * 15 * MINUTE

    def build(self) -> Clinic:
        rng = self.rng
        self.business = Business(
            self.ids.next(), "Harbourside Physio & Pilates (synthetic)", "Australia/Sydney", "AU",
            self.history_start, self.import_time,
        )  # fmt: skip
        self.practitioners = self._practitioners()
        self.types = self._appointment_types()
        self.individual_types = [t for t in self.types if t.max_attendees is None and t.archived_at is None]
        self.group_types = [t for t in self.types if t.max_attendees is not None]
        self.active_practitioners = [p for p in self.practitioners if p.active]

        patients = [_new_patient(rng, self.ids.next(), self.import_time) for _ in range(self.patient_count)]
        self.roles = self._roles(patients)
        counts = self._individual_counts(patients)
        self.boundaries = self._boundaries(patients, counts)
        self.individual: list[IndividualAppointment] = []
        first_seen: dict[int, float] = {}
        for patient, count in zip(patients, counts, strict=True):
            for start, status in self._schedule(patient, count):
                appointment = self._appointment(patient, start, status)
                self.individual.append(appointment)
                first_seen[patient.id] = min(first_seen.get(patient.id, appointment.created_at), appointment.created_at)
        self.groups: list[GroupAppointment] = []
        self.attendees: list[Attendee] = []
        self._group_classes(patients, first_seen)
        self._ensure_every_status()
        self._patient_timestamps(patients, first_seen)
        self._households(patients)
        # Both passes draw from their own stream, so the records above stay what they were before fractions existed.
        finish_rng = random.Random(self.seed * 15485863 + 11)
        _crowd_seconds(finish_rng, [p for p in patients if p.updated_at != self.import_time], self.now)
        _crowd_seconds(finish_rng, [a for a in self.individual if a.updated_at != self.import_time], self.now)
        for table in (self.types, self.practitioners, [self.business], patients, self.individual, self.groups):
            _hide_fractions(finish_rng, table)
        _hide_fractions(finish_rng, self.attendees)
        ids = self.ids.fork(self.seed * 31 + 3)
        return Clinic(
            now=self.now,
            seed=self.seed,
            businesses=[self.business],
            practitioners=self.practitioners,
            appointment_types=self.types,
            patients=patients,
            individual_appointments=self.individual,
            group_appointments=self.groups,
            attendees=self.attendees,
            id_source=self.ids,
            appointment_attendees=[_attendee_for(a, ids.next()) for a in self.individual],
        )

    def _practitioners(self) -> list[Practitioner]:
        people = (
            ("Dr", "Amara", "Okafor-Nguyễn", "Physiotherapist"),
            (None, "Seán", "Fitzgerald", "Physiotherapist"),
            (None, "Ingrid", "Løvås", "Exercise Physiologist"),
            (None, "Kenji", "Watanabe", "Remedial Massage Therapist"),
            ("Dr", "Priyanka", "D'Souza", "Physiotherapist"),
            (None, "Tomás", "Ó Briain", "Pilates Instructor"),
        )
        result = [
            Practitioner(self.ids.next(), *person, created_at=self.history_start + i * DAY, updated_at=self.import_time)
            for i, person in enumerate(people)
        ]
        # Left the clinic a year ago: made inactive (Cliniko does not archive practitioners); old bookings remain.
        result[1].active = False
        result[1].updated_at = self.now - YEAR
        return result

    def _appointment_types(self) -> list[AppointmentType]:
        kinds = (
            ("Initial Consultation", 60, "Physiotherapy", None),
            ("Standard Consultation", 30, "Physiotherapy", None),
            ("Long Consultation", 45, "Physiotherapy", None),
            ("Telehealth Review", 30, "Physiotherapy", None),
            ("Remedial Massage", 60, "Massage", None),
            ("Clinical Pilates Class", 55, "Classes", 8),
            ("Hydrotherapy Class", 45, "Classes", 10),
            ("Dry Needling (retired)", 30, "Physiotherapy", None),
        )
        result = [
            AppointmentType(self.ids.next(), name, minutes, category, size, self.history_start, self.import_time)
            for name, minutes, category, size in kinds
        ]
        result[-1].archived_at = result[-1].updated_at = self.import_time + 200 * DAY
        return result

    def _roles(self, patients: list[Patient]) -> dict[int, str]:
        """Assign roles and retirements (archived, merged, deleted)."""
        rng = self.rng
        order = list(range(len(patients)))
        rng.shuffle(order)
        total = len(patients)
        archived = round(total * 0.04)
        merged = round(total * 0.012)
        deleted = round(total * 0.006)
        self.retired = {
            "archived": order[:archived],
            "merged": order[archived : archived + merged],
            "deleted": order[archived + merged : archived + merged + deleted],
        }
        retired_count = archived + merged + deleted
        self.retired_ids = {patients[i].id for i in order[:retired_count]}
        eligible = order[retired_count:]
        current = round(total * CURRENT_SHARE)
        group_only = max(1, round(current * 0.06)) if current >= 10 else 0
        upcoming = round(total * 0.015)
        never = round(total * 0.06)
        roles: dict[int, str] = {}
        cursor = 0
        for role, size in (("group_only", group_only), ("current", current - group_only), ("upcoming", upcoming)):
            for index in eligible[cursor : cursor + size]:
                roles[patients[index].id] = role
            cursor += size
        for index in eligible[cursor : cursor + never]:
            roles[patients[index].id] = "never"
        for index in eligible[cursor + never :]:
            roles[patients[index].id] = "lapsed"
        for index in order[:retired_count]:
            # retired patients get ordinary histories, so some have recent bookings (they must still not be active)
            roles[patients[index].id] = "retired_current" if rng.random() < 0.3 else "lapsed"
        # Patients brought over by the bulk import (their history predates the move to Cliniko).
        shuffled = eligible[:]
        rng.shuffle(shuffled)
        self.imported = {patients[i].id for i in shuffled[: self.tie_size]}
        self.imported.update(patients[i].id for i in order if rng.random() < 0.15)
        return roles

    def _boundaries(self, patients: list[Patient], counts: list[int]) -> dict[int, int]:
        """Exact window edges for three patients: at now-45d and at now (active), one second earlier (not)."""
        now = self.now
        wanted = [("current", now - DESIGN_WINDOW), ("current", now), ("lapsed", now - DESIGN_WINDOW - 1)]
        result: dict[int, int] = {}
        for patient, count in zip(patients, counts, strict=True):
            role = self.roles[patient.id]
            for position, (wanted_role, start) in enumerate(wanted):
                if count and role == wanted_role:
                    result[patient.id] = start
                    del wanted[position]
                    break
        return result

    def _individual_counts(self, patients: list[Patient]) -> list[int]:
        """Individual appointments per patient, summing to the requested total (when it covers one per patient)."""
        rng = self.rng
        roles = self.roles
        needs_one = [0 if roles[p.id] in ("never", "group_only") else 1 for p in patients]
        budget = self.individual_count
        counts = [0] * len(patients)
        for position in sorted(range(len(patients)), key=lambda i: roles[patients[i].id] != "current"):
            if budget == 0:
                break
            if needs_one[position]:
                counts[position] = 1
                budget -= 1
        weights = [min(rng.paretovariate(1.2), 40.0) if counts[i] else 0.0 for i in range(len(patients))]
        weight_total = sum(weights)
        if budget > 0 and weight_total > 0:
            shares = [budget * w / weight_total for w in weights]
            extra = [int(share) for share in shares]
            for position, share in enumerate(extra):
                counts[position] += share
            leftover = budget - sum(extra)
            candidates = [i for i in range(len(patients)) if weights[i] > 0]
            for position in rng.choices(candidates, k=leftover):
                counts[position] += 1
        return counts

    def _schedule(self, patient: Patient, count: int) -> list[tuple[int, str]]:
        """(starts_at, status) for each of a patient's individual appointments."""
        if count == 0:
            return []
        rng = self.rng
        now = self.now
        role = self.roles[patient.id]
        earliest = self.history_start if patient.id in self.imported else self.import_time + 2 * DAY
        gap: float = rng.choice((7, 7, 14, 14, 21, 28)) * DAY
        if role in ("current", "retired_current"):
            anchor = now - rng.uniform(DAY, 43 * DAY)
            future = min(count - 1, rng.choice((0, 0, 1, 1, 2, 3)))
            past = count - future
            gap = min(gap, max((anchor - earliest) / max(past - 1, 1), HOUR))
            first_future = now + rng.uniform(2 * DAY, 14 * DAY)
            starts = [self.slot(anchor - k * gap) for k in range(past)]
            starts[0] = self.boundaries.get(patient.id, starts[0])
            starts += [self.slot(first_future + k * gap) for k in range(future)]
            schedule = [(start, self._status(start)) for start in starts]
            schedule[0] = (starts[0], "did_not_arrive" if rng.random() < 0.05 else "normal")  # the qualifying anchor
            return schedule
        if role == "upcoming":
            first = now + rng.uniform(DAY, 60 * DAY)
            return [(start, self._status(start)) for start in (self.slot(first + k * gap) for k in range(count))]
        latest = now - DESIGN_WINDOW - 2 * DAY
        gap = min(gap, max((latest - earliest) / max(count - 1, 1), HOUR))
        end = rng.uniform(earliest + (count - 1) * gap, latest)
        schedule = [(start, self._status(start)) for start in (self.slot(end - k * gap) for k in range(count))]
        if patient.id in self.boundaries:
            schedule[0] = (self.boundaries[patient.id], "normal")
        elif count > 1 and rng.random() < 0.03:
            # a lapsed patient whose only recent booking does not qualify
            status = rng.choice(("cancelled", "archived", "deleted"))
            schedule[0] = (self.slot(now - rng.uniform(DAY, 43 * DAY)), status)
        return schedule

    def _status(self, start: int) -> str:
        roll = self.rng.random()
        if start > self.now:
            for status, limit in (("cancelled", 0.05), ("archived", 0.055), ("deleted", 0.058)):
                if roll < limit:
                    return status
            return "normal"
        for status, limit in (("cancelled", 0.07), ("did_not_arrive", 0.10), ("archived", 0.11), ("deleted", 0.115)):
            if roll < limit:
                return status
        return "normal"

    def _created(self, patient_id: int, start: int) -> int:
        """When a booking was made: some days ahead, never after now; imported history carries the import time."""
        imported = patient_id in self.imported
        if imported and start < self.import_time:
            return self.import_time
        created = min(start - int(self.rng.uniform(HOUR, 30 * DAY)), self.now - int(self.rng.uniform(0, 20 * DAY)))
        return max(created, self.import_time if imported else self.import_time + 1)

    def _finish(self, record: IndividualAppointment | Attendee, start: int, end: int, status: str) -> None:
        """Set the status fields and a plausible updated_at (imported history keeps the import time)."""
        rng = self.rng
        now = self.now
        imported_history = record.created_at == self.import_time and start < self.import_time
        changed: float
        if status == "cancelled":
            record.cancelled_at = int(rng.uniform(record.created_at, min(max(start, record.created_at), now)))
            record.cancellation_reason = rng.choice(CANCELLATION_REASONS)
            record.cancellation_note = rng.choice(CANCELLATION_NOTES)
            changed = record.cancelled_at
        elif status in ("archived", "deleted"):
            earliest = min(max(end, record.created_at), now)
            changed = int(rng.uniform(earliest, min(earliest + 200 * DAY, now)))
            setattr(record, f"{status}_at", changed)
        elif start <= now:
            changed = min(now, end + int(rng.uniform(5 * MINUTE, 3 * DAY)))
        else:
            changed = record.created_at
        if imported_history:
            changed = self.import_time
        record.updated_at = max(record.created_at, min(changed, now))

    def _appointment(self, patient: Patient, start: int, status: str) -> IndividualAppointment:
        rng = self.rng
        kind = rng.choice(self.individual_types)
        practitioners = self.practitioners if start < self.now - YEAR else self.active_practitioners
        end = start + kind.duration_in_minutes * MINUTE
        created = self._created(patient.id, start)
        appointment = IndividualAppointment(
            id=self.ids.next(),
            patient_id=patient.id,
            practitioner_id=rng.choice(practitioners).id,
            appointment_type_id=kind.id,
            business_id=self.business.id,
            starts_at=start,
            ends_at=end,
            created_at=created,
            updated_at=created,
            notes=rng.choice(CLINICAL_NOTES),
            telehealth_url=f"https://telehealth.example.test/room/{rng.randrange(10**6)}"
            if kind.name.startswith("Telehealth")
            else None,
        )
        if status == "did_not_arrive":
            appointment.did_not_arrive = True
            appointment.patient_arrived = False
        elif status == "normal" and start <= self.now:
            appointment.patient_arrived = True
        self._finish(appointment, start, end, status)
        return appointment

    def _group_classes(self, patients: list[Patient], first_seen: dict[int, float]) -> None:
        """Classes across the history with `attendee_count` attendances; group-only patients get a recent one."""
        if self.attendee_count == 0 or not self.group_types:
            return
        rng = self.rng
        now = self.now
        per_class = 4
        class_count = max(1, math.ceil(self.attendee_count / per_class))
        group_only = [p.id for p in patients if self.roles[p.id] == "group_only"]
        lapsed = [p.id for p in patients if self.roles[p.id] == "lapsed"]
        recent_pool = [p.id for p in patients if self.roles[p.id] in ("current", "group_only", "retired_current")]
        future_pool = recent_pool + [p.id for p in patients if self.roles[p.id] == "upcoming"]
        anyone = [p.id for p in patients if self.roles[p.id] != "never"] or [p.id for p in patients]
        guaranteed = math.ceil(len(group_only) / 2)
        remaining = self.attendee_count
        for index in range(class_count):
            size = min(remaining, math.ceil(remaining / (class_count - index)))
            remaining -= size
            if index < guaranteed:
                start = self.slot(now - rng.uniform(2 * DAY, 40 * DAY))
            else:
                start = self.slot(rng.uniform(self.import_time + 2 * DAY, now + 60 * DAY))
            kind = rng.choice(self.group_types)
            created = max(min(start - int(rng.uniform(DAY, 60 * DAY)), now - DAY), self.import_time + 1)
            group = GroupAppointment(
                id=self.ids.next(),
                practitioner_id=rng.choice(self.active_practitioners).id,
                appointment_type_id=kind.id,
                business_id=self.business.id,
                starts_at=start,
                ends_at=start + kind.duration_in_minutes * MINUTE,
                max_attendees=max(kind.max_attendees or 0, size),
                created_at=created,
                updated_at=created,
            )
            if index >= guaranteed:
                roll = rng.random()
                if roll < 0.02:
                    group.archived_at = max(created, min(now, start + 30 * DAY))
                elif roll < 0.03:
                    group.deleted_at = max(created, min(now, start + 30 * DAY))
            self.groups.append(group)
            in_window = now - DESIGN_WINDOW - DAY <= start <= now
            pool = recent_pool if in_window else future_pool if start > now else anyone
            fixed: list[tuple[int, str | None]] = []
            if index < guaranteed:
                # group-only patients are active through this class; a lapsed patient's cancelled place is not
                fixed = [(patient_id, "normal") for patient_id in group_only[2 * index : 2 * index + 2]]
                fixed += [(rng.choice(lapsed), "cancelled")] if lapsed else []
            fixed = fixed[:size]
            fixed += [(patient_id, None) for patient_id in rng.choices(pool or anyone, k=size - len(fixed))]
            for patient_id, status in fixed:
                self._attend(group, patient_id, status, first_seen)
            last_change = max(
                [group.created_at, group.archived_at or 0, group.deleted_at or 0]
                + [self.attendees[-1].created_at if group.attendee_ids else 0]
            )
            group.updated_at = min(last_change, now)

    def _ensure_every_status(self) -> None:
        """Even a small clinic has at least one cancelled, archived and deleted appointment and attendance.

        Only lapsed patients' records before the window are changed, so the active patients stay as designed.
        """
        cutoff = self.now - DESIGN_WINDOW - 2 * DAY
        groups = {group.id: group for group in self.groups}
        for records, starts in (
            (self.individual, lambda record: record.starts_at),
            (self.attendees, lambda record: groups[record.booking_id].starts_at),
        ):
            spare = [
                record
                for record in records
                if self.roles[record.patient_id] == "lapsed"
                and starts(record) < cutoff
                and record.cancelled_at is None
                and record.archived_at is None
                and record.deleted_at is None
            ]
            for status in ("cancelled", "archived", "deleted"):
                if spare and all(getattr(record, f"{status}_at") is None for record in records):
                    record = spare.pop(self.rng.randrange(len(spare)))
                    moment = max(record.updated_at, min(self.now, starts(record) + DAY))
                    setattr(record, f"{status}_at", moment)
                    record.updated_at = moment

    def _attend(
        self, group: GroupAppointment, patient_id: int, status: str | None, first_seen: dict[int, float]
    ) -> None:
        rng = self.rng
        start = group.starts_at
        if status is None:
            roll = rng.random()
            status = "normal"
            for candidate, limit in (("cancelled", 0.06), ("archived", 0.07), ("deleted", 0.075)):
                if roll < limit:
                    status = candidate
                    break
        created = max(self._created(patient_id, start), group.created_at)
        attendee = Attendee(
            id=self.ids.next(), patient_id=patient_id, booking_id=group.id, created_at=created, updated_at=created
        )
        if status == "normal" and start <= self.now:
            attendee.arrived = rng.random() > 0.08
        self._finish(attendee, start, group.ends_at, status)
        group.attendee_ids.append(attendee.id)
        self.attendees.append(attendee)
        first_seen[patient_id] = min(first_seen.get(patient_id, created), created)

    def _patient_timestamps(self, patients: list[Patient], first_seen: dict[int, float]) -> None:
        """created_at before the first booking; later edits; archive, merge and delete times."""
        rng = self.rng
        now = self.now
        bulk: set[int] = set()  # imported patients never edited since the import: one big updated_at tie
        for patient in patients:
            if patient.id in self.imported:
                patient.created_at = self.import_time
            else:
                first = first_seen.get(patient.id, int(rng.uniform(self.import_time + DAY, now)))
                patient.created_at = max(self.import_time + 1, first - int(rng.uniform(0, 2 * DAY)))
            patient.updated_at = patient.created_at
        for patient in patients:
            if patient.id in self.imported and len(bulk) < self.tie_size and patient.id not in self.retired_ids:
                bulk.add(patient.id)
            elif rng.random() < 0.6:
                patient.updated_at = int(rng.uniform(patient.created_at, now))
            if patient.id in self.imported and patient.id not in bulk:
                patient.old_reference_id = f"LEGACY-{rng.randrange(10**5):05d}"
        survivors = [p for p in patients if p.id not in self.retired_ids]
        for kind, positions in self.retired.items():
            for position in positions:
                patient = patients[position]
                moment = int(rng.uniform(max(patient.updated_at, now - 2 * YEAR), now))
                patient.updated_at = moment
                if kind == "deleted":
                    patient.deleted_at = moment
                    continue
                patient.archived_at = moment
                if kind == "merged" and survivors:
                    patient.merged_at = moment
                    patient.merged_with_patient_id = rng.choice(survivors).id

    def _households(self, patients: list[Patient]) -> None:
        """A few families share a mobile and an email (one contact per Cliniko patient must still come out)."""
        rng = self.rng
        households = max(1, len(patients) // 60) if len(patients) >= 4 else 0
        for _ in range(households):
            parent, *children = rng.sample(patients, rng.choice((2, 2, 3)))
            mobile = next((n for t, n in parent.patient_phone_numbers or [] if t == "Mobile"), None) or _mobile(rng)
            parent.patient_phone_numbers = [("Mobile", mobile)]
            parent.email = parent.email or _email(rng, parent.first_name, parent.last_name)
            for child in children:
                child.last_name = parent.last_name
                child.email = parent.email
                child.patient_phone_numbers = [("Mobile", mobile), *(child.patient_phone_numbers or [])[:1]]
