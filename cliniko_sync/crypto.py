"""Cliniko API keys encrypted at rest: one Fernet token per organization in `api_credentials` (DESIGN §6)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cliniko_sync.config import ENCRYPTION_KEY_CREDENTIAL, ENV_ENCRYPTION_KEY, ENV_ENCRYPTION_KEY_FILE, encryption_keys
from cliniko_sync.errors import ConfigError, UsageError
from cliniko_sync.orgs import SERVICE, get_organization

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from cliniko_sync.db import DictConnection
    from cliniko_sync.orgs import Organization

_ROTATION_HINT = "list the new key first and the old one after it (comma-separated, or one a line in a key file)"
_HOW_TO_MAKE_A_KEY = (
    f"make one with `cliniko-sync keygen` and export {ENV_ENCRYPTION_KEY}=<key> (or name a file holding it in "
    f"{ENV_ENCRYPTION_KEY_FILE}, or load it as the systemd credential {ENCRYPTION_KEY_CREDENTIAL})"
)


@dataclass(frozen=True)
class EncryptionKeys:
    """The encryption keys as one MultiFernet (the first encrypts, all decrypt), and where they came from."""

    fernet: MultiFernet
    source: str  # for messages: CREDENTIALS_ENCRYPTION_KEY, "the key file PATH" or "the systemd credential PATH"


def load_keys() -> EncryptionKeys:
    """The encryption keys (config.encryption_keys: the variable, a key file or the systemd credential)."""
    from cryptography.fernet import Fernet, MultiFernet

    source, keys = encryption_keys()
    if not keys:
        raise ConfigError(f"{ENV_ENCRYPTION_KEY} is not set; {_HOW_TO_MAKE_A_KEY}")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # Never echo the value: it is (or is meant to be) a secret.
            raise ConfigError(
                f"{source} key #{position} is not a valid Fernet key (32 url-safe base64 bytes); {_HOW_TO_MAKE_A_KEY}"
            ) from None
    return EncryptionKeys(MultiFernet(fernets), source)


@dataclass(frozen=True)
class Credentials:
    """A decrypted Cliniko API key, the shard its suffix names (`au1`, `uk2`), and an optional API URL override."""

    api_key: str = field(repr=False)
    shard: str
    api_url: str | None

    def __repr__(self) -> str:
        from cliniko_sync.cliniko.client import key_hint

        return f"Credentials(api_key={key_hint(self.api_key)!r}, shard={self.shard!r}, api_url={self.api_url!r})"

    __str__ = __repr__


# Cliniko's keys are long base64 strings; anything shorter than this before the shard suffix was not pasted whole
# (or is not a key at all). Keys for a loopback API URL (the emulator, which accepts any key) are exempt.
MIN_KEY_BODY = 20


def check_key_length(api_key: str, api_url: str | None) -> None:
    """Offline: refuse a key whose body (before `-<shard>`) is under MIN_KEY_BODY characters (exit 2)."""
    from urllib.parse import urlsplit

    from cliniko_sync.cliniko.client import _is_loopback, key_hint, shard_for_key

    if api_url and _is_loopback(urlsplit(api_url).hostname or ""):
        return
    shard = shard_for_key(api_key)
    body = api_key[: -len(shard) - 1] if api_key.lower().endswith("-" + shard) else api_key
    if len(body) < MIN_KEY_BODY:
        raise UsageError(
            f"API key {key_hint(api_key)} is too short to be a Cliniko API key ({len(body)} characters before the "
            f"shard suffix, at least {MIN_KEY_BODY} expected): copy the whole key from Cliniko (My Info → Manage API "
            "keys)"
        )


def stored_api_url(conn: DictConnection, organization: Organization) -> str | None:
    """The API URL override stored with the organization's current key, if any (None when none or unreadable)."""
    try:
        return load_credentials(conn, organization).api_url
    except ConfigError:
        return None


def store_credentials(conn: DictConnection, org_id: str, api_key: str, *, api_url: str | None = None) -> Credentials:
    """Check the key's shape offline, encrypt it, and store it as the organization's Cliniko credentials."""
    from cliniko_sync.cliniko.client import check_api_url, shard_for_key, validate_api_key_shape
    from cliniko_sync.db import query

    validate_api_key_shape(api_key)
    if api_url is not None:
        api_url = api_url.strip()
        check_api_url(api_url)
    check_key_length(api_key, api_url)
    credentials = Credentials(api_key=api_key, shard=shard_for_key(api_key), api_url=api_url or None)
    payload = {"api_key": credentials.api_key, "shard": credentials.shard, "api_url": credentials.api_url}
    token = load_keys().fernet.encrypt(json.dumps(payload).encode()).decode()
    get_organization(conn, org_id)
    with conn.transaction():
        # A new key has not been checked yet: forget the previous key's validation result.
        conn.execute(query("credentials_forget_check"), {"org": org_id, "service": SERVICE})
        conn.execute(query("credentials_store"), {"org": org_id, "service": SERVICE, "token": token})
    return credentials


def _decrypt(keys: EncryptionKeys, org_id: str, token: str) -> bytes:
    from cryptography.fernet import InvalidToken

    try:
        return keys.fernet.decrypt(token.encode())
    except InvalidToken:
        raise ConfigError(
            f"cannot decrypt the stored API key of {org_id} with {keys.source}: wrong key? (while rotating, "
            f"{_ROTATION_HINT})"
        ) from None


def load_credentials(conn: DictConnection, organization: Organization | str) -> Credentials:
    """Decrypt the organization's Cliniko credentials; none stored, or undecryptable → 78.

    Pass the Organization the caller already has. A bare id is looked up first (unknown → 78); only the sync
    pipeline still passes one, until it is split into steps.
    """
    org_id = organization if isinstance(organization, str) else organization.id
    if isinstance(organization, str):
        get_organization(conn, org_id)
    row = conn.execute(
        "SELECT token FROM api_credentials WHERE organization_id = %s AND service = %s", (org_id, SERVICE)
    ).fetchone()
    if row is None:
        raise ConfigError(
            f"no Cliniko API key stored for {org_id}: run `cliniko-sync credentials set {org_id}` (key on stdin)"
        )
    plain = _decrypt(load_keys(), org_id, row["token"])
    try:
        payload = json.loads(plain)
        # Tokens written by 0.1.0 name the shard "region".
        shard = payload["shard"] if "shard" in payload else payload["region"]
        return Credentials(api_key=payload["api_key"], shard=shard, api_url=payload.get("api_url"))
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"the stored credentials of {org_id} are damaged: set them again with `cliniko-sync credentials set`"
        ) from None


def rotate_credentials(conn: DictConnection, keys: EncryptionKeys) -> int:
    """Re-encrypt every stored token with the first of `keys`; all or nothing."""
    from cryptography.fernet import InvalidToken

    from cliniko_sync.db import query

    with conn.transaction():
        rows = conn.execute(query("credentials_for_rotation")).fetchall()
        for row in rows:
            try:
                token = keys.fernet.rotate(row["token"].encode()).decode()
            except InvalidToken:
                raise ConfigError(
                    f"cannot decrypt the stored API key of {row['organization_id']} with any key in {keys.source}; "
                    f"nothing was rotated ({_ROTATION_HINT})"
                ) from None
            conn.execute("UPDATE api_credentials SET token = %s, updated_at = now() WHERE id = %s", (token, row["id"]))
    return len(rows)
