"""Cliniko API records as mirror-table rows: typed columns plus the raw JSON minus what the tool must not keep."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cliniko_sync.errors import ClinikoAPIError

# Clinical free text and identifiers the tool never uses (DESIGN §6): dropped before anything reaches the database.
_APPOINTMENT_DENIED = frozenset(
    {
        "notes",
        "cancellation_note",
        "telehealth_url",
        "booking_ip_address",
        "has_patient_appointment_notes",
    }
)
DENY_LIST: dict[str, frozenset[str]] = {
    "patients": frozenset(
        {
            "notes",
            "appointment_notes",
            "medical_alerts",
            "custom_fields",
            "occupation",
            "emergency_contact",
            "invoice_extra_information",
            "invoice_default_to",
            "invoice_email",
            "referral_source",
        }
    ),
    "individual_appointments": _APPOINTMENT_DENIED,
    "group_appointments": _APPOINTMENT_DENIED,
    "attendees": _APPOINTMENT_DENIED,
    "appointment_types": frozenset(),
    "practitioners": frozenset(),
    "businesses": frozenset(),
}
# Whole families of keys, whatever Cliniko names the variant (medicare_reference_number, dva_card_number,
# health_fund_member_number, emergency_contact_phone, ...). "dva" must start a word: "advance" contains it.
_DENIED_KEY_PATTERN = re.compile(r"medicare|health_?fund|insurance|emergency_contact|(?:^|_)dva")
# Verdicts per (resource, key): pages repeat the same few dozen keys, so the pattern runs once per key, not per record.
_VERDICT_CACHE_LIMIT = 4096
_verdicts: dict[str, dict[str, bool]] = {resource: {} for resource in DENY_LIST}


def _is_denied(resource: str, key: str) -> bool:
    cache = _verdicts[resource]
    verdict = cache.get(key)
    if verdict is None:
        verdict = key in DENY_LIST[resource] or _DENIED_KEY_PATTERN.search(key.lower()) is not None
        if len(cache) < _VERDICT_CACHE_LIMIT:
            cache[key] = verdict
    return verdict


def denied_keys(resource: str, keys: set[str]) -> list[str]:
    """The deny-listed keys among `keys` (a page's key set): the mirror's SQL drops them with `raw - keys`."""
    if resource not in DENY_LIST:
        raise ValueError(f"no deny-list for resource {resource!r}")
    return sorted(key for key in keys if _is_denied(resource, key))


def scrub(resource: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of `raw` without the deny-listed top-level keys of `resource`."""
    if resource not in DENY_LIST:
        raise ValueError(f"no deny-list for resource {resource!r}")
    return {key: value for key, value in raw.items() if not _is_denied(resource, key)}


def parse_time(value: object) -> datetime | None:
    """An aware UTC datetime from Cliniko's ISO 8601 text; None and "" (old API docs) mean no time."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ClinikoAPIError("Cliniko sent a timestamp that is not ISO 8601") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ClinikoAPIError(f"Cliniko sent a timestamp of type {type(value).__name__}")
    if parsed.tzinfo is UTC:
        return parsed
    if parsed.tzinfo is None:
        # Cliniko documents every date-time as UTC; a value without an offset is read that way.
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def link_id(obj: object) -> str | None:
    """The id at the end of a link object's self URL: {"links": {"self": ".../patients/123"}} → "123"."""
    if not isinstance(obj, dict):
        return None
    links = obj.get("links")
    if not isinstance(links, dict):
        return None
    url = links.get("self")
    if not isinstance(url, str):
        return None
    segment = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return segment or None


@lru_cache(maxsize=65536)
def _e164(number: str, default_region: str) -> str | None:
    import phonenumbers

    try:
        parsed = phonenumbers.parse(number, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_phone(numbers: list[dict[str, Any]] | None, default_region: str) -> str | None:
    """The patient's phone in E.164: the Mobile number if valid, else the first other valid one; None if none is."""
    if not isinstance(numbers, list):
        return None
    entries = [entry for entry in numbers if isinstance(entry, dict) and isinstance(entry.get("number"), str)]
    region = (default_region or "").upper()
    mobiles = [entry for entry in entries if entry.get("phone_type") == "Mobile"]
    others = [entry for entry in entries if entry.get("phone_type") != "Mobile"]
    for entry in mobiles + others:
        number = entry["number"].strip()
        found = _e164(number, region) if number else None
        if found:
            return found
    return None


def _record_id(raw: dict[str, Any]) -> str:
    record_id = raw.get("id")
    if record_id is None or record_id == "" or isinstance(record_id, bool):
        raise ClinikoAPIError("Cliniko sent a record without an id")
    return str(record_id)


def _common(resource: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The columns every mirror row has: id, created/updated/archived/deleted times and the scrubbed raw JSON."""
    created_at = parse_time(raw.get("created_at"))
    updated_at = parse_time(raw.get("updated_at")) or created_at
    if updated_at is None:
        raise ClinikoAPIError(f"Cliniko sent a {resource} record without updated_at")
    return {
        "id": _record_id(raw),
        "created_at": created_at,
        "updated_at": updated_at,
        "archived_at": parse_time(raw.get("archived_at")),
        "deleted_at": parse_time(raw.get("deleted_at")),
        "raw": scrub(resource, raw),
    }


def listing_row(raw: dict[str, Any]) -> dict[str, Any]:
    """What the crawl needs of a record (its id and updated_at), with the record itself for the mirror's SQL,
    which reads every other column from the JSON (sql/queries/mirror_rows_*.sql)."""
    created_at = parse_time(raw.get("created_at"))
    updated_at = parse_time(raw.get("updated_at")) or created_at
    if updated_at is None:
        raise ClinikoAPIError("Cliniko sent a record without updated_at")
    return {"id": _record_id(raw), "updated_at": updated_at, "raw": raw}


def _text(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _full_name(raw: dict[str, Any], first_key: str) -> str | None:
    first = _text(raw.get(first_key)) or _text(raw.get("first_name"))
    return " ".join(part for part in (first, _text(raw.get("last_name"))) if part) or None


def patient_contact(raw: dict[str, Any], default_region: str) -> tuple[str | None, str | None, str | None]:
    """A patient's name, email (lower-cased) and phone (E.164); `default_region` (ISO country, e.g. "AU") reads
    local phone numbers. Worked out here, not in SQL: phonenumbers is the one phone rule (DESIGN §2)."""
    email = _text(raw.get("email"))
    return (
        _text(raw.get("label")) or _full_name(raw, "preferred_first_name"),
        email.lower() if email else None,
        normalize_phone(raw.get("patient_phone_numbers"), default_region),
    )


def patient_row(raw: dict[str, Any], *, default_region: str) -> dict[str, Any]:
    """A cliniko_patients row; `default_region` (ISO country, e.g. "AU") reads local phone numbers."""
    name, email, phone = patient_contact(raw, default_region)
    row = _common("patients", raw)
    row.update(
        first_name=raw.get("first_name"),
        last_name=raw.get("last_name"),
        name=name,
        email=email,
        phone=phone,
        phone_valid=phone is not None,
        merged_at=parse_time(raw.get("merged_at")),
    )
    return row


def _flag(value: object) -> bool:
    return value is True


def individual_appointment_row(raw: dict[str, Any]) -> dict[str, Any]:
    """A cliniko_individual_appointments row; related records are read from their link objects."""
    row = _common("individual_appointments", raw)
    row.update(
        patient_id=link_id(raw.get("patient")),
        practitioner_id=link_id(raw.get("practitioner")),
        appointment_type_id=link_id(raw.get("appointment_type")),
        business_id=link_id(raw.get("business")),
        starts_at=parse_time(raw.get("starts_at")),
        ends_at=parse_time(raw.get("ends_at")),
        did_not_arrive=_flag(raw.get("did_not_arrive")),
        cancelled_at=parse_time(raw.get("cancelled_at")),
    )
    return row


def group_appointment_row(raw: dict[str, Any]) -> dict[str, Any]:
    """A cliniko_group_appointments row."""
    max_attendees = raw.get("max_attendees")
    row = _common("group_appointments", raw)
    row.update(
        practitioner_id=link_id(raw.get("practitioner")),
        appointment_type_id=link_id(raw.get("appointment_type")),
        business_id=link_id(raw.get("business")),
        starts_at=parse_time(raw.get("starts_at")),
        ends_at=parse_time(raw.get("ends_at")),
        max_attendees=max_attendees if isinstance(max_attendees, int) and not isinstance(max_attendees, bool) else None,
    )
    return row


def attendee_row(raw: dict[str, Any]) -> dict[str, Any]:
    """A cliniko_attendees row; the group appointment comes from the booking link (booking id = group id)."""
    arrived = raw.get("arrived")
    row = _common("attendees", raw)
    row.update(
        patient_id=link_id(raw.get("patient")),
        group_appointment_id=link_id(raw.get("booking"))
        or link_id(raw.get("group_appointment"))
        or link_id(raw.get("appointment")),
        arrived=arrived if isinstance(arrived, bool) else None,
        # Cliniko documents `arrived` (nullable) on attendees; an older shape carried `did_not_arrive` instead.
        did_not_arrive=arrived is False or _flag(raw.get("did_not_arrive")),
        cancelled_at=parse_time(raw.get("cancelled_at")),
    )
    return row


def appointment_type_row(raw: dict[str, Any]) -> dict[str, Any]:
    """A cliniko_appointment_types row."""
    row = _common("appointment_types", raw)
    row["name"] = appointment_type_name(raw)
    return row


def appointment_type_name(raw: dict[str, Any]) -> str | None:
    return _text(raw.get("name"))


def business_row(raw: dict[str, Any]) -> dict[str, Any]:
    """A cliniko_businesses row (one of the clinic's locations)."""
    row = _common("businesses", raw)
    row["name"] = business_name(raw)
    return row


def business_name(raw: dict[str, Any]) -> str | None:
    """A location's name: its business name, else its label."""
    return _text(raw.get("business_name")) or _text(raw.get("label"))


def practitioner_row(raw: dict[str, Any]) -> dict[str, Any]:
    """A cliniko_practitioners row; the name is what the clinic shows (display name, else label, else full name)."""
    row = _common("practitioners", raw)
    row["name"] = practitioner_name(raw)
    return row


def practitioner_name(raw: dict[str, Any]) -> str | None:
    """What the clinic shows: display name, else label, else full name."""
    return _text(raw.get("display_name")) or _text(raw.get("label")) or _full_name(raw, "first_name")
