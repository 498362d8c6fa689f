"""Matching Cliniko patients to contacts (DESIGN §2), set-based, inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from cliniko_sync.db import DictConnection, query
from cliniko_sync.sync.active import RecomputeScope


@dataclass
class ContactCounts:
    refreshed: int = 0
    linked_by_email: int = 0
    linked_by_phone: int = 0
    created: int = 0


def match_contacts(conn: DictConnection, organization_id: str, scope: RecomputeScope | None = None) -> ContactCounts:
    """Same Cliniko id, else exactly one free contact with the email, else with the phone, else a new contact.

    Only for the patients written since the last recompute (`scope`, from take_changed_patients in the same
    transaction); every patient without one. Patients not written keep what the run that wrote them matched.
    """
    scope = scope or RecomputeScope(everything=True)
    in_scope = scope.written_patients("p.id")
    params = {"org": organization_id}
    counts = ContactCounts()
    match = sql.SQL(query("contacts_match"))  # our own file, composed with identifiers only
    email, phone = (
        match.format(field=sql.Identifier(name), contact_field=contact_field, scope=in_scope)
        for name, contact_field in (("email", sql.SQL("lower(f.email)")), ("phone", sql.SQL("f.phone")))
    )
    with scope.planned(conn):
        refresh = sql.SQL(query("contacts_refresh_linked")).format(scope=in_scope)
        counts.refreshed = conn.execute(refresh, params).rowcount
        counts.linked_by_email = conn.execute(email, params).rowcount
        counts.linked_by_phone = conn.execute(phone, params).rowcount
        counts.created = conn.execute(sql.SQL(query("contacts_create")).format(scope=in_scope), params).rowcount
    return counts


def valid_phone_share(conn: DictConnection, organization_id: str, scope: RecomputeScope | None = None) -> float | None:
    """Share of current patients (not archived, merged or deleted) with a valid phone number.

    Counting reads every patient of the organization; a run whose recompute drained no written patient (`scope`, in
    the same transaction) changed no patient row since the last count, so it reuses that count instead.
    """
    params = {"org": organization_id}
    row = None
    if scope is not None and not scope.everything and scope.written == 0:
        row = conn.execute(query("valid_phone_share_kept"), params).fetchone()
    if row is None or row["patients"] is None:
        row = conn.execute(query("valid_phone_share"), params).fetchone()
    if not row or not row["patients"]:
        return None
    return round(int(row["with_phone"]) / int(row["patients"]), 4)
