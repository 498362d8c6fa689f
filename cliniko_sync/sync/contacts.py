"""Matching Cliniko patients to contacts (DESIGN §2), set-based, inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from cliniko_sync.db import DictConnection, query


@dataclass
class ContactCounts:
    refreshed: int = 0
    linked_by_email: int = 0
    linked_by_phone: int = 0
    created: int = 0


def match_contacts(conn: DictConnection, organization_id: str) -> ContactCounts:
    """Same Cliniko id, else exactly one free contact with the email, else with the phone, else a new contact."""
    params = {"org": organization_id}
    counts = ContactCounts()
    counts.refreshed = conn.execute(query("contacts_refresh_linked"), params).rowcount
    match = sql.SQL(query("contacts_match"))  # our own file, composed with identifiers only
    counts.linked_by_email = conn.execute(match.format(field=sql.Identifier("email")), params).rowcount
    counts.linked_by_phone = conn.execute(match.format(field=sql.Identifier("phone")), params).rowcount
    counts.created = conn.execute(query("contacts_create"), params).rowcount
    return counts


def valid_phone_share(conn: DictConnection, organization_id: str) -> float | None:
    """Share of current patients (not archived, merged or deleted) with a valid phone number."""
    row = conn.execute(
        """
        SELECT count(*) AS patients, count(*) FILTER (WHERE phone_valid) AS with_phone
        FROM cliniko_patients
        WHERE organization_id = %s AND archived_at IS NULL AND merged_at IS NULL AND deleted_at IS NULL
          AND removed_at IS NULL
        """,
        (organization_id,),
    ).fetchone()
    if not row or not row["patients"]:
        return None
    return round(row["with_phone"] / row["patients"], 4)
