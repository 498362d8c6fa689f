"""`cliniko-sync keygen`, `credentials set | rotate`, `check-credentials`."""

from __future__ import annotations

import typer

from cliniko_sync.cli_help import FORMAT_OPTION, examples
from cliniko_sync.output import RowFormat

app = typer.Typer(help="Store and rotate encrypted Cliniko API keys.", no_args_is_help=True)

KEYGEN_EXAMPLES = examples(
    "cliniko-sync keygen",
    "export CREDENTIALS_ENCRYPTION_KEY=$(cliniko-sync keygen)",
)
CHECK_EXAMPLES = examples(
    "cliniko-sync check-credentials surf-rehab",
    "cliniko-sync check-credentials --all",
    "cliniko-sync check-credentials --all --format json",
)


def keygen() -> None:
    """Print a new Fernet key for CREDENTIALS_ENCRYPTION_KEY."""
    from cryptography.fernet import Fernet

    typer.echo(Fernet.generate_key().decode())


def _read_api_key() -> str:
    """The key from stdin when it is piped in, else from a hidden prompt: never from the command line."""
    import sys

    from cliniko_sync.errors import UsageError

    if sys.stdin is not None and not sys.stdin.isatty():
        api_key = sys.stdin.read().strip()
    else:
        api_key = typer.prompt("Cliniko API key", hide_input=True, err=True).strip()
    if not api_key:
        raise UsageError("no API key given: pipe it on stdin or type it at the prompt")
    return api_key


@app.command(
    "set",
    epilog=examples(
        "cliniko-sync credentials set surf-rehab < surf-rehab.key",
        "pass cliniko/surf-rehab | cliniko-sync credentials set surf-rehab",
        "echo demo-key-au1 | cliniko-sync credentials set demo-clinic --api-url http://127.0.0.1:8765/v1",
    ),
)
def set_(
    org_id: str = typer.Argument(..., metavar="ORG", help="Organization id."),
    api_url: str | None = typer.Option(
        None,
        "--api-url",
        metavar="URL",
        help="Override the API base URL (https; http only on loopback, e.g. the emulator). Default: keep the "
        "stored override, else the key's shard.",
    ),
) -> None:
    """Store ORG's Cliniko API key, read from stdin or a hidden prompt.

    The key is checked offline first (printable, no spaces, a known shard suffix, at least 20 characters before it)
    and stored encrypted with CREDENTIALS_ENCRYPTION_KEY. A URL stored by an earlier --api-url is kept.
    """
    from cliniko_sync import db, orgs
    from cliniko_sync.cliniko.client import base_url_for, key_hint
    from cliniko_sync.config import current_settings
    from cliniko_sync.crypto import load_keys, store_credentials, stored_api_url

    with db.session(current_settings(), autocommit=True) as conn:
        # Refuse before asking for the key when it could not be stored anyway.
        organization = orgs.get_organization(conn, org_id)
        load_keys()
        keep = api_url if api_url is not None else stored_api_url(conn, organization)
        credentials = store_credentials(conn, org_id, _read_api_key(), api_url=keep)
    typer.echo(
        f"stored Cliniko API key {key_hint(credentials.api_key)} for {org_id} "
        f"(shard {credentials.shard}, {base_url_for(credentials.api_key, credentials.api_url)}); "
        f"check it with `cliniko-sync check-credentials {org_id}`"
    )


@app.command(
    "rotate",
    epilog=examples(
        'CREDENTIALS_ENCRYPTION_KEY="$(cliniko-sync keygen),$OLD_KEY" cliniko-sync credentials rotate',
        "cliniko-sync credentials rotate",
    ),
)
def rotate() -> None:
    """Re-encrypt every stored key with the first encryption key (CREDENTIALS_ENCRYPTION_KEY, its key file or the
    systemd credential: list NEW,OLD)."""
    from cliniko_sync import db
    from cliniko_sync.config import current_settings
    from cliniko_sync.crypto import load_keys, rotate_credentials

    keys = load_keys()
    with db.session(current_settings()) as conn:
        count = rotate_credentials(conn, keys)
    noun = "credential" if count == 1 else "credentials"
    typer.echo(f"re-encrypted {count} stored {noun} with the first key in {keys.source}")


def check_credentials(
    org_id: str | None = typer.Argument(None, metavar="ORG", help="Organization id (or --all)."),
    all_: bool = typer.Option(False, "--all", help="Check every enabled organization (disabled ones are skipped)."),
    fmt: RowFormat = FORMAT_OPTION,
    deep: bool = typer.Option(
        False, "--deep", help="Also test every assumption the sync makes about the Cliniko API (about 25 requests)."
    ),
) -> None:
    """Ask Cliniko whether stored API keys are accepted.

    Exit 0 when accepted, 77 rejected, 69 unreachable, 78 configuration (no key, cannot decrypt, no contact email),
    1 an unexpected answer; with --all the worst of them, in the order 78, 77, 1, 69. With --deep, one row per
    assumption (held, violated, unknown or info) and exit 1 when any is violated.
    """
    from cliniko_sync import db, orgs
    from cliniko_sync.config import current_settings
    from cliniko_sync.credential_check import COLUMNS, check_credentials, worst_exit_code
    from cliniko_sync.errors import UsageError
    from cliniko_sync.logs import stderr_line
    from cliniko_sync.output import render

    if all_ == (org_id is not None):
        raise UsageError("name one organization or give --all")
    with db.session(current_settings(), autocommit=True) as conn:
        # --all checks the organizations `sync --all` would sync: disabled ones are skipped, as there.
        if all_:
            checked = orgs.list_organizations(conn, enabled_only=True)
        else:
            checked = [orgs.get_organization(conn, org_id or "")]
        if deep:
            from cliniko_sync.deep_check import deep_check, report

            raise typer.Exit(report([deep_check(conn, each) for each in checked], fmt))
        results = [check_credentials(conn, each) for each in checked]
    render(
        (result.as_dict() for result in results),
        COLUMNS,
        fmt,
        title="Cliniko credentials",
        table_columns=[c for c in COLUMNS if c != "exit_code"],
    )
    for result in results:
        if not result.ok:  # also on stderr, so cron mails the reason even when stdout goes to a file
            stderr_line(str(result.error), organization=result.organization_id, event="credentials_failed")
    raise typer.Exit(worst_exit_code([result.exit_code for result in results]))
