"""The Cliniko resources the sync copies, declared as data over one generic crawl loop (pipeline.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.client import Filter

RowParser = Callable[[dict[str, Any], str], dict[str, Any]]


def _everything(*fields: str) -> tuple[Filter, ...]:
    """`field:*` filters: Cliniko leaves archived, cancelled and deleted records out unless a filter names them."""
    return tuple(Filter(name, "*") for name in fields)


@dataclass(frozen=True)
class Stream:
    """One Cliniko list endpoint mirrored into one table.

    incremental streams are crawled in updated_at order from a cursor (crawl.py); the others are small reference
    lists read whole on every run, from each of their `paths` in turn. include_filters of a reference list are a
    wish: if Cliniko refuses them (400 or 422), the list is read without them (archived appointment types then just
    lack a name in the JSON details).
    """

    name: str
    table: str
    columns: tuple[str, ...]
    parse: RowParser
    include_filters: tuple[Filter, ...] = field(default=())
    incremental: bool = True
    paths: tuple[str, ...] = ()  # the documented list endpoints read into this mirror; default: (name,)
    timed_by: str | None = None  # the field the window reads filter on (appointments' starts_at)
    # Full passes read these records by the ids of that stream's records (`booking_id:=…`), after its pass.
    classes_of: str | None = None

    def __post_init__(self) -> None:
        if not self.paths:
            object.__setattr__(self, "paths", (self.name,))
        if self.incremental and len(self.paths) != 1:
            raise ValueError("an incremental stream reads one endpoint")


REFERENCE_COLUMNS = ("id", "name", "created_at", "updated_at", "archived_at", "deleted_at", "raw")


def _reference_list(
    name: str,
    row: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    include: tuple[Filter, ...],
    paths: tuple[str, ...] = (),
) -> Stream:
    """A small list read whole on every run (appointment types, practitioners)."""
    return Stream(
        name=name,
        table=f"cliniko_{name}",
        columns=REFERENCE_COLUMNS,
        parse=lambda raw, country: row(raw),
        include_filters=include,
        incremental=False,
        paths=paths,
    )


STREAMS: tuple[Stream, ...] = (
    _reference_list("appointment_types", records.appointment_type_row, include=_everything("archived_at")),
    # The clinic's locations, so an appointment's details can say where it is.
    _reference_list("businesses", records.business_row, include=_everything("archived_at", "deleted_at")),
    # Practitioners are never archived, only made inactive: Cliniko lists those on a second endpoint.
    _reference_list(
        "practitioners", records.practitioner_row, include=(), paths=("practitioners", "practitioners/inactive")
    ),
    Stream(
        name="patients",
        table="cliniko_patients",
        columns=(
            "id",
            "first_name",
            "last_name",
            "name",
            "email",
            "phone",
            "phone_valid",
            "created_at",
            "updated_at",
            "archived_at",
            "deleted_at",
            "merged_at",
            "raw",
        ),
        parse=lambda raw, country: records.patient_row(raw, default_region=country),
        include_filters=_everything("archived_at"),
    ),
    Stream(
        name="individual_appointments",
        table="cliniko_individual_appointments",
        columns=(
            "id",
            "patient_id",
            "practitioner_id",
            "appointment_type_id",
            "business_id",
            "starts_at",
            "ends_at",
            "did_not_arrive",
            "cancelled_at",
            "archived_at",
            "deleted_at",
            "created_at",
            "updated_at",
            "raw",
        ),
        parse=lambda raw, country: records.individual_appointment_row(raw),
        include_filters=_everything("archived_at", "cancelled_at", "deleted_at"),
        timed_by="starts_at",
    ),
    Stream(
        name="group_appointments",
        table="cliniko_group_appointments",
        columns=(
            "id",
            "practitioner_id",
            "appointment_type_id",
            "business_id",
            "starts_at",
            "ends_at",
            "max_attendees",
            "archived_at",
            "deleted_at",
            "created_at",
            "updated_at",
            "raw",
        ),
        parse=lambda raw, country: records.group_appointment_row(raw),
        include_filters=_everything("archived_at", "deleted_at"),
        timed_by="starts_at",
    ),
    Stream(
        name="attendees",
        table="cliniko_attendees",
        columns=(
            "id",
            "patient_id",
            "group_appointment_id",
            "arrived",
            "did_not_arrive",
            "cancelled_at",
            "archived_at",
            "deleted_at",
            "created_at",
            "updated_at",
            "raw",
        ),
        parse=lambda raw, country: records.attendee_row(raw),
        include_filters=_everything("archived_at", "cancelled_at", "deleted_at"),
        # Cliniko lists an attendee record for every individual appointment too: a whole crawl would read about as
        # many records as the individual appointments themselves, for nothing (DESIGN §2).
        classes_of="group_appointments",
    ),
)

STREAMS_BY_NAME = {stream.name: stream for stream in STREAMS}
