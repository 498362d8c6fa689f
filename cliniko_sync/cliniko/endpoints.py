"""What Cliniko documents for each list endpoint the tool reads: its envelope key and its `q[]` fields with their types.

The one table of what may be sent where (../shared/cliniko-api.md §4, from Cliniko's OpenAPI spec). Cliniko answers a
field an endpoint does not list with HTTP 400 "This column is not searchable.", so the client refuses to build such a
request at all: sending one is a bug in this tool, not something to find out at a clinic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DATE_TIME, INTEGER, STRING, BOOLEAN, ARRAY, DATE = "date-time", "integer", "string", "boolean", "array", "date"

# Operators Cliniko documents per field type (cliniko-api.md §4). Date-times have no `=`.
OPERATORS: Mapping[str, frozenset[str]] = {
    DATE: frozenset({"=", ">=", ">", "<=", "<", "?", "!?"}),
    DATE_TIME: frozenset({">=", ">", "<=", "<", "?", "!?", "*"}),
    INTEGER: frozenset({"=", "!=", ">=", ">", "<=", "<", "?", "!?"}),
    STRING: frozenset({"=", "!=", "~", "~~", "?", "!?"}),
    BOOLEAN: frozenset({"=", "!="}),
    ARRAY: frozenset({"~"}),
}


class UndocumentedParameterError(ValueError):
    """A request names a `q[]` field, operator or sort column its endpoint does not document: a bug in the tool."""


@dataclass(frozen=True)
class Endpoint:
    """One documented list endpoint: its path under /v1, the envelope key of its records, and its `q[]` fields."""

    path: str
    envelope: str
    fields: Mapping[str, str]

    def check_filter(self, field: str, op: str) -> None:
        kind = self.fields.get(field)
        if kind is None:
            raise UndocumentedParameterError(f"/{self.path} does not document the filter field {field!r}")
        if op not in OPERATORS[kind]:
            raise UndocumentedParameterError(f"/{self.path}: operator {op!r} is not documented for {kind} {field!r}")

    def check_sort(self, sort: str) -> None:
        for part in sort.split(","):
            column, _, direction = part.partition(":")
            if self.fields.get(column) in (None, ARRAY) or direction not in ("", "asc", "desc"):
                raise UndocumentedParameterError(f"/{self.path} cannot be sorted by {part!r}")


def _fields(kind: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, kind)


_APPOINTMENT_IDS = ("appointment_type_id", "business_id", "id", "practitioner_id", "repeated_from_id")
_PRACTITIONER_FIELDS = {
    **_fields(BOOLEAN, "active", "show_in_online_bookings"),
    **_fields(DATE_TIME, "created_at", "updated_at"),
    **_fields(INTEGER, "id", "user_id"),
}


def _table(endpoints: Iterable[Endpoint]) -> dict[str, Endpoint]:
    return {endpoint.path: endpoint for endpoint in endpoints}


ENDPOINTS: Mapping[str, Endpoint] = _table(
    (
        Endpoint(
            "patients",
            "patients",
            {
                **_fields(BOOLEAN, "accepted_privacy_policy"),
                **_fields(DATE_TIME, "archived_at", "created_at", "updated_at"),
                **_fields(DATE, "date_of_birth"),
                **_fields(STRING, "email", "first_name", "last_name", "preferred_first_name", "old_reference_id"),
                **_fields(INTEGER, "id"),
            },
        ),
        Endpoint(
            "individual_appointments",
            "individual_appointments",
            {
                **_fields(INTEGER, *_APPOINTMENT_IDS, "patient_id"),
                **_fields(
                    DATE_TIME,
                    "archived_at",
                    "cancelled_at",
                    "created_at",
                    "deleted_at",
                    "ends_at",
                    "starts_at",
                    "updated_at",
                ),
                **_fields(BOOLEAN, "did_not_arrive"),
            },
        ),
        Endpoint(
            "group_appointments",
            "group_appointments",
            {
                **_fields(INTEGER, *_APPOINTMENT_IDS),
                **_fields(DATE_TIME, "archived_at", "created_at", "deleted_at", "ends_at", "starts_at", "updated_at"),
                **_fields(ARRAY, "patient_ids"),
            },
        ),
        Endpoint(
            "attendees",
            "attendees",
            {
                **_fields(INTEGER, "appointment_id", "booking_id", "id", "patient_case_id", "patient_id"),
                **_fields(DATE_TIME, "archived_at", "cancelled_at", "created_at", "deleted_at", "updated_at"),
            },
        ),
        Endpoint("practitioners", "practitioners", _PRACTITIONER_FIELDS),
        Endpoint("practitioners/inactive", "practitioners", _PRACTITIONER_FIELDS),
        Endpoint(
            "appointment_types",
            "appointment_types",
            {
                **_fields(DATE_TIME, "archived_at", "created_at", "updated_at"),
                **_fields(INTEGER, "id"),
                **_fields(STRING, "category", "online_payments_mode"),
                **_fields(BOOLEAN, "show_in_online_bookings"),
            },
        ),
        Endpoint(
            "businesses",
            "businesses",
            {
                **_fields(DATE_TIME, "archived_at", "created_at", "deleted_at", "updated_at"),
                **_fields(INTEGER, "id"),
                **_fields(BOOLEAN, "show_in_online_bookings"),
                **_fields(ARRAY, "appointment_type_ids"),
            },
        ),
    )
)


def endpoint(path: str) -> Endpoint:
    """The documented endpoint at `path` (e.g. "practitioners/inactive"); any other path is a bug in the tool."""
    try:
        return ENDPOINTS[path]
    except KeyError:
        raise UndocumentedParameterError(f"/{path} is not a list endpoint this tool knows") from None
