"""Contact matching (DESIGN §2) against contacts other systems already own: id, then email, then phone."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import expected_phone, setup_org

from cliniko_sync.sync.pipeline import sync_organization

pytestmark = pytest.mark.usefixtures("sync_environment")


def current_with(clinic: Any, *, email: bool, phone: bool) -> list[Any]:
    """Current patients with a unique email and/or a valid phone nobody else in the clinic has."""
    patients = [p for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at)]
    emails = [p.email.lower() for p in clinic.patients.records.values() if p.email]
    phones = [expected_phone(p.patient_phone_numbers) for p in clinic.patients.records.values()]
    return [
        p
        for p in patients
        if (not email or (p.email and emails.count(p.email.lower()) == 1))
        and (not phone or ((ph := expected_phone(p.patient_phone_numbers)) and phones.count(ph) == 1))
    ]


def add_contact(conn: psycopg.Connection, org: str, *, name: str | None = None, email: str | None = None,
                phone: str | None = None, patient_id: str | None = None) -> str:  # fmt: skip
    row = conn.execute(
        "INSERT INTO contacts (organization_id, name, email, phone, cliniko_patient_id, created_by) "
        "VALUES (%s, %s, %s, %s, %s, 'crm') RETURNING id",
        (org, name, email, phone, patient_id),
    ).fetchone()
    return str(row["id"])


def contact(conn: psycopg.Connection, contact_id: str) -> dict[str, Any]:
    return conn.execute("SELECT * FROM contacts WHERE id = %s", (contact_id,)).fetchone()


def contacts_of(conn: psycopg.Connection, org: str, patient_id: str) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM contacts WHERE organization_id = %s AND cliniko_patient_id = %s", (org, patient_id)
    ).fetchall()


def test_matching_order_and_ownership(conn: psycopg.Connection, database_url: str, emulator: Any,
                                      clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    by_email, ambiguous, by_phone, kept_name, family = current_with(clinic, email=True, phone=True)[:5]

    # An unlinked contact with the same email (other case): linked, its empty fields filled.
    email_contact = add_contact(conn, org, email=by_email.email.lower())
    # Two contacts share this patient's email: ambiguous, so matching falls through to the phone.
    add_contact(conn, org, name="Twin one", email=ambiguous.email.lower())
    add_contact(conn, org, name="Twin two", email=ambiguous.email.lower())
    phone_for_ambiguous = add_contact(
        conn, org, name="Phone twin", phone=expected_phone(ambiguous.patient_phone_numbers)
    )
    # Only the phone matches.
    phone_contact = add_contact(conn, org, phone=expected_phone(by_phone.patient_phone_numbers), email="other@crm.test")
    # A contact another system named: linked by email, its name kept.
    named = add_contact(conn, org, name="Keep This Name", email=kept_name.email.lower())
    # Linked to a different Cliniko patient already: never matched by email (families share addresses).
    add_contact(conn, org, name="Sibling", email=family.email.lower(), patient_id="1")

    result = sync_organization(database_url, org, as_of=clinic.now)
    assert result.status == "success", result.error
    contacts = result.stats["contacts"]
    assert contacts["linked_by_email"] == 2 and contacts["linked_by_phone"] == 2

    linked = contact(conn, email_contact)
    assert linked["cliniko_patient_id"] == str(by_email.id)
    assert linked["name"] and linked["phone"] == expected_phone(by_email.patient_phone_numbers)
    assert linked["created_by"] == "crm"
    assert contact(conn, phone_for_ambiguous)["cliniko_patient_id"] == str(ambiguous.id)
    assert contact(conn, phone_contact)["cliniko_patient_id"] == str(by_phone.id)
    assert contact(conn, phone_contact)["email"] == "other@crm.test"  # not overwritten
    assert contact(conn, named)["cliniko_patient_id"] == str(kept_name.id)
    assert contact(conn, named)["name"] == "Keep This Name"
    family_contacts = contacts_of(conn, org, str(family.id))
    assert len(family_contacts) == 1 and family_contacts[0]["created_by"] == "cliniko-sync"
    for patient in (by_email, ambiguous, by_phone, kept_name, family):
        assert len(contacts_of(conn, org, str(patient.id))) == 1


def test_edits_flow_to_our_contacts_but_not_to_other_systems(conn: psycopg.Connection, database_url: str,
                                                             emulator: Any, clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    theirs, ours = current_with(clinic, email=True, phone=False)[:2]
    original_email = theirs.email.lower()
    named = add_contact(conn, org, name="CRM Name", email=original_email)
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    clinic.edit_patient(theirs.id, first_name="Renamed", email="renamed.theirs@example.test")
    clinic.edit_patient(ours.id, first_name="Renamed", email="Renamed.Ours@Example.test")
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    crm = contact(conn, named)
    assert crm["name"] == "CRM Name" and crm["email"] == original_email
    mine = contacts_of(conn, org, str(ours.id))[0]
    assert mine["email"] == "renamed.ours@example.test" and mine["name"].startswith("Renamed")


def test_a_contact_claimed_by_two_patients_goes_to_the_lowest_id(conn: psycopg.Connection, database_url: str,
                                                                 emulator: Any, clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    first, second = sorted(current_with(clinic, email=False, phone=False)[:2], key=lambda p: p.id)
    shared = "household@example.test"
    clinic.edit_patient(first.id, email=shared)
    clinic.edit_patient(second.id, email=shared)
    household = add_contact(conn, org, name="Household", email=shared)
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    assert contact(conn, household)["cliniko_patient_id"] == str(first.id)
    assert len(contacts_of(conn, org, str(second.id))) == 1
