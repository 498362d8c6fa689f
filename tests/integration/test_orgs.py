"""Organizations: the plain functions against a real database (validation, defaults, updates, unknown ids)."""

from __future__ import annotations

import pytest

from cliniko_sync.errors import EXIT_CONFIG, EXIT_USAGE, ConfigError, UsageError
from cliniko_sync.orgs import (
    add_organization,
    get_organization,
    list_organizations,
    update_organization,
    validate_org_id,
)


def test_add_uses_documented_defaults_and_creates_the_cliniko_service(conn) -> None:
    org = add_organization(conn, "surf-rehab", name="Surf Rehab")

    assert (org.id, org.name, org.country, org.time_zone) == ("surf-rehab", "Surf Rehab", "AU", "Australia/Sydney")
    assert (org.window_days, org.include_upcoming, org.enabled) == (45, False, True)
    assert org.created_at.tzinfo is not None
    services = conn.execute("SELECT organization_id, service FROM organization_services").fetchall()
    assert services == [{"organization_id": "surf-rehab", "service": "cliniko"}]


def test_add_normalises_country_and_name(conn) -> None:
    org = add_organization(
        conn,
        "kiwi-physio",
        name="  Kiwi Physio — Ōtautahi  ",
        country="nz",
        time_zone="Pacific/Auckland",
        window_days=60,
        include_upcoming=True,
    )

    assert (org.name, org.country, org.time_zone, org.window_days, org.include_upcoming) == (
        "Kiwi Physio — Ōtautahi",
        "NZ",
        "Pacific/Auckland",
        60,
        True,
    )
    assert get_organization(conn, "kiwi-physio") == org


def test_duplicate_id_is_a_usage_error_and_changes_nothing(conn) -> None:
    add_organization(conn, "surf-rehab", name="Surf Rehab")

    with pytest.raises(UsageError, match="already exists") as caught:
        add_organization(conn, "surf-rehab", name="Another")

    assert caught.value.exit_code == EXIT_USAGE
    assert get_organization(conn, "surf-rehab").name == "Surf Rehab"
    assert conn.execute("SELECT count(*) AS n FROM organization_services").fetchone()["n"] == 1


@pytest.mark.parametrize("org_id", ["a", "surf-rehab", "clinic-42", "0", "a" * 63])
def test_valid_org_ids(org_id: str) -> None:
    assert validate_org_id(org_id) == org_id


@pytest.mark.parametrize(
    "org_id", ["", "-surf", "Surf", "surf_rehab", "surf rehab", "a" * 64, "surf\n", "sürf", "surf/../x", "x;drop"]
)
def test_invalid_org_ids_are_refused_on_one_line(org_id: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_org_id(org_id)

    assert caught.value.exit_code == EXIT_USAGE
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "must not be empty"),
        ({"name": "   "}, "must not be empty"),
        ({"name": "x" * 201}, "at most 200"),
        ({"name": "Surf\nRehab"}, "control characters"),
        ({"name": "Surf\x00Rehab"}, "control characters"),
        ({"country": "ZZ"}, "unknown country"),
        ({"country": "AUS"}, "unknown country"),
        ({"country": "AC"}, "unknown country"),
        ({"time_zone": "Australia/Atlantis"}, "unknown time zone"),
        ({"time_zone": "../../etc/passwd"}, "unknown time zone"),
        ({"window_days": 0}, "1 to 3650"),
        ({"window_days": 3651}, "1 to 3650"),
        ({"window_days": -5}, "1 to 3650"),
    ],
)
def test_add_validation_refuses_with_one_line_and_stores_nothing(conn, changes: dict, message: str) -> None:
    arguments = {"name": "Surf Rehab", **changes}

    with pytest.raises(UsageError, match=message) as caught:
        add_organization(conn, "surf-rehab", **arguments)

    assert caught.value.exit_code == EXIT_USAGE
    assert "\n" not in str(caught.value)
    assert list_organizations(conn) == []


def test_name_of_exactly_200_characters_is_accepted(conn) -> None:
    assert len(add_organization(conn, "long", name="é" * 200).name) == 200


def test_unknown_organization_is_a_configuration_error_naming_org_add(conn) -> None:
    with pytest.raises(ConfigError, match="org add ghost") as caught:
        get_organization(conn, "ghost")

    assert caught.value.exit_code == EXIT_CONFIG


def test_list_is_ordered_by_id_and_can_skip_disabled(conn) -> None:
    for org_id in ("zeta", "alpha", "mid"):
        add_organization(conn, org_id, name=org_id.title())
    update_organization(conn, "mid", enabled=False)

    assert [o.id for o in list_organizations(conn)] == ["alpha", "mid", "zeta"]
    assert [o.id for o in list_organizations(conn, enabled_only=True)] == ["alpha", "zeta"]


def test_update_changes_only_what_was_given(conn) -> None:
    before = add_organization(conn, "surf-rehab", name="Surf Rehab")

    after = update_organization(
        conn, "surf-rehab", window_days=60, include_upcoming=True, country="gb", time_zone="Europe/London", name=None
    )

    assert (after.name, after.country, after.time_zone, after.window_days, after.include_upcoming) == (
        "Surf Rehab",
        "GB",
        "Europe/London",
        60,
        True,
    )
    assert after.created_at == before.created_at
    assert after.updated_at >= before.updated_at
    assert get_organization(conn, "surf-rehab") == after


def test_update_validates_and_leaves_the_row_alone(conn) -> None:
    before = add_organization(conn, "surf-rehab", name="Surf Rehab")

    with pytest.raises(UsageError):
        update_organization(conn, "surf-rehab", window_days=60, country="XX")

    assert get_organization(conn, "surf-rehab") == before


def test_update_refuses_unknown_fields(conn) -> None:
    add_organization(conn, "surf-rehab", name="Surf Rehab")

    with pytest.raises(UsageError, match="cannot change id"):
        update_organization(conn, "surf-rehab", id="other")


def test_update_of_unknown_organization_is_a_configuration_error(conn) -> None:
    with pytest.raises(ConfigError, match="unknown organization ghost"):
        update_organization(conn, "ghost", window_days=10)
    with pytest.raises(ConfigError, match="unknown organization ghost"):
        update_organization(conn, "ghost")
