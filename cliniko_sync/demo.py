"""`cliniko-sync demo`: the embedded database, the built-in emulator, a demo organization, and one full sync."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cliniko_sync.config import ENV_CONTACT_EMAIL, ENV_DATA_DIR, ENV_ENCRYPTION_KEY, Settings, data_dir

if TYPE_CHECKING:
    from cliniko_sync.sync.pipeline import SyncResult

DEMO_ORGANIZATION = "demo-clinic"
DEMO_NAME = "Demo Clinic (synthetic data)"
DEMO_CONTACT_EMAIL = "demo@cliniko-sync.invalid"
DEMO_KEY_FILE = "demo-encryption.key"


def note(message: str) -> None:
    """What the demo is doing, on stderr; -q keeps it quiet."""
    from cliniko_sync.config import current_settings

    if not current_settings().quiet:
        sys.stderr.write(f"demo: {message}\n")
        sys.stderr.flush()


def demo_encryption_key(directory: Path) -> str:
    """The demo-only Fernet key kept in the data directory, made on first use (owner-only file)."""
    from cryptography.fernet import Fernet

    from cliniko_sync.errors import ConfigError

    path = directory / DEMO_KEY_FILE
    try:
        if path.exists():
            return path.read_text(encoding="ascii").strip()
        directory.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key().decode("ascii")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the demo key in {directory} ({exc.strerror}): set {ENV_DATA_DIR}") from None
    return key


def fill_demo_environment() -> None:
    """Give this process an encryption key and a contact email when the operator has not set them."""
    if not os.environ.get(ENV_ENCRYPTION_KEY):
        directory = data_dir()
        os.environ[ENV_ENCRYPTION_KEY] = demo_encryption_key(directory)
        note(
            f"{ENV_ENCRYPTION_KEY} is not set: using a demo-only key stored in {directory / DEMO_KEY_FILE} "
            "(never use it for real credentials)"
        )
    if not os.environ.get(ENV_CONTACT_EMAIL):
        os.environ[ENV_CONTACT_EMAIL] = DEMO_CONTACT_EMAIL
        note(f"{ENV_CONTACT_EMAIL} is not set: using {DEMO_CONTACT_EMAIL} for the emulator")


def _prepare_organization(url: str, api_url: str) -> None:
    """Create demo-clinic on the first run; on every run enable it and point its credentials at this emulator."""
    from cliniko_sync import db
    from cliniko_sync.crypto import store_credentials
    from cliniko_sync.emulator import DEMO_API_KEY
    from cliniko_sync.errors import ConfigError
    from cliniko_sync.orgs import add_organization, get_organization, update_organization

    with db.connect(url, autocommit=True) as conn:
        try:
            get_organization(conn, DEMO_ORGANIZATION)
            note(f"organization {DEMO_ORGANIZATION} exists: syncing it again")
        except ConfigError:
            add_organization(conn, DEMO_ORGANIZATION, name=DEMO_NAME)
            note(f"created organization {DEMO_ORGANIZATION}")
        update_organization(conn, DEMO_ORGANIZATION, enabled=True)
        store_credentials(conn, DEMO_ORGANIZATION, DEMO_API_KEY, api_url=api_url)


def disable_demo_organization(url: str) -> None:
    """Its emulator stops with the demo, so scheduled `sync --all` runs must not try it."""
    from cliniko_sync import db
    from cliniko_sync.orgs import update_organization

    with db.connect(url, autocommit=True) as conn:
        update_organization(conn, DEMO_ORGANIZATION, enabled=False)


def run_demo(settings: Settings, *, progress: Any = None) -> SyncResult:
    """Set everything up and run one full sync of demo-clinic against a freshly generated synthetic clinic."""
    from cliniko_sync import db
    from cliniko_sync.emulator import DEMO_API_KEY, EmulatorServer, generate_clinic
    from cliniko_sync.sync.pipeline import sync_organization

    fill_demo_environment()
    explicit = settings.resolved_database_url()
    if explicit:
        note(f"using the database at {db.describe_url(explicit)}")
    else:
        note(f"starting the embedded PostgreSQL in {data_dir()} (first start takes a few seconds)")
    url = db.database_url(settings)
    for name in db.upgrade(url, settings.resolved_schema()):
        note(f"applied migration {name}")
    clinic = generate_clinic()
    with EmulatorServer(clinic, api_keys=[DEMO_API_KEY], rate_limit=None) as server:
        note(f"serving a synthetic clinic on {server.base_url}")
        _prepare_organization(url, server.base_url)
        try:
            return sync_organization(url, DEMO_ORGANIZATION, full=True, progress=progress)
        finally:
            disable_demo_organization(url)


def demo(settings: Settings) -> None:
    """The whole demo as the command runs it: progress bars on a terminal, then the active patients and the status."""
    from cliniko_sync import db, reports
    from cliniko_sync.errors import ClinikoSyncError
    from cliniko_sync.output import Format, render_report
    from cliniko_sync.progress import RichProgress, wanted

    if wanted(settings.quiet):
        with RichProgress() as progress:
            result = run_demo(settings, progress=progress)
    else:
        result = run_demo(settings)
    if result.exit_code:
        failure = ClinikoSyncError(f"the demo sync did not succeed ({result.status}): {result.error}")
        failure.exit_code = result.exit_code
        raise failure
    note(f"full sync done: {result.requests} API requests, {result.active_patients} active patients")
    with db.session(settings) as conn:
        patients = reports.list_active(conn, DEMO_ORGANIZATION, descending=True)
        title = f"Active patients of {DEMO_ORGANIZATION} (latest appointment first)"
        render_report(
            patients,
            reports.LIST_COLUMNS,
            reports.LIST_TABLE,
            Format.table,
            title=title,
            drop_first=reports.LIST_DROP_FIRST,
        )
        status = reports.organization_status(conn, DEMO_ORGANIZATION)
    render_report(
        status,
        reports.STATUS_COLUMNS,
        reports.STATUS_TABLE,
        Format.table,
        title="Sync status",
        drop_first=reports.STATUS_DROP_FIRST,
    )
    note(
        f"next: `cliniko-sync list-active {DEMO_ORGANIZATION} --format json`, "
        f"`cliniko-sync status {DEMO_ORGANIZATION} --history 5`; "
        f"{DEMO_ORGANIZATION} is left disabled so `sync --all` skips it"
    )
