"""Quirks: permissive or deliberately broken behaviours the emulator can switch on, all off by default.

By default the emulator behaves as cliniko-api.md says the real API does (the stricter reading wherever the notes
say [inferred] or [unverified]). Each quirk brings back one old, looser or broken behaviour, for the tests that
check how the client copes with it. `EmulatorServer(clinic, quirks=Quirks(...))`; `cliniko-sync emulator --quirk NAME`
for the boolean ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Quirks:
    # Any field of the record may be filtered and sorted on (the old permissive emulator), e.g. practitioners'
    # archived_at (always null), appointment types' name, businesses' business_name.
    accept_undocumented_filters: bool = False
    # The status of "This column is not searchable." (an undocumented q[] field or sort column, or refuse_filters);
    # 422 exercises the old behaviour. Malformed values and bad paging stay 400.
    refused_status: int = 400
    # links.self/previous/next carry the request's q[] and sort, not only page and per_page.
    next_links_keep_query: bool = False
    # No hidden fractions: created_at/updated_at are stored in whole seconds, exactly as shown (changes the clinic).
    whole_second_storage: bool = False
    # `sort` (and `order`) are accepted but ignored: every list comes in the default order (created_at, id).
    ignore_sort: bool = False
    # q[] fields the server accepts but does not apply (an ignored archived_at:* leaves archived records out).
    ignore_filters: tuple[str, ...] = ()
    # (endpoint, field) pairs refused as not searchable although documented; endpoint is the path after /v1/
    # ("patients", "practitioners/inactive", "group_appointments/{id}/attendees"); field "*" means any q[] there.
    refuse_filters: tuple[tuple[str, str], ...] = ()
    # Record ids (and group appointments' patient_ids) rendered as JSON numbers instead of strings.
    ids_as_numbers: bool = False
    # GET /practitioners/inactive answers 404 (an older API without it).
    no_inactive_practitioners_endpoint: bool = False
    # Attendees also carry the old `did_not_arrive` (true when `arrived` is false).
    attendee_did_not_arrive: bool = False
    # /attendees lists group-class attendees only: individual appointments have no attendee record (the older reading;
    # by default every individual appointment has one, its booking the appointment itself; changes the clinic).
    group_attendees_only: bool = False
    # Timestamps rendered with their stored fraction, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    fractional_seconds_rendered: bool = False


BOOLEAN_QUIRKS = tuple(item.name for item in fields(Quirks) if item.type in ("bool", bool))
