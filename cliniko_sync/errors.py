"""The tool's own exceptions, each carrying the sysexits code the CLI exits with (DESIGN §7)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_UNAVAILABLE = 69
EXIT_LOCKED = 75
EXIT_CREDENTIALS_REJECTED = 77
EXIT_CONFIG = 78


class ClinikoSyncError(Exception):
    """Base class: a message safe to show an operator (no keys, no patient data) and an exit code."""

    exit_code = EXIT_FAILURE


class UsageError(ClinikoSyncError):
    exit_code = EXIT_USAGE


class PartialRunError(ClinikoSyncError):
    """A run stopped early (signal or --max-runtime) after a checkpoint."""

    exit_code = EXIT_PARTIAL


class UnavailableError(ClinikoSyncError):
    """Cliniko or the database could not be reached after retries."""

    exit_code = EXIT_UNAVAILABLE


class DatabaseUnavailableError(UnavailableError):
    pass


class LockedError(ClinikoSyncError):
    """Another process holds this organization's sync lock."""

    exit_code = EXIT_LOCKED


class CredentialsRejectedError(ClinikoSyncError):
    """Cliniko answered 401 or 403."""

    exit_code = EXIT_CREDENTIALS_REJECTED


class ConfigError(ClinikoSyncError):
    """Missing or undecryptable credentials, unknown organization, schema not upgraded, bad environment."""

    exit_code = EXIT_CONFIG


class SchemaNotReadyError(ConfigError):
    pass


class ClinikoAPIError(ClinikoSyncError):
    """Cliniko answered something the client cannot use (404, 422, malformed body, retries exhausted on 5xx)."""

    exit_code = EXIT_FAILURE


class ClinikoValidationError(ClinikoAPIError):
    """Cliniko answered 422: it does not accept the request's parameters (e.g. a filter it does not know)."""


class ClinikoUnavailableError(UnavailableError):
    """Timeouts, connection errors or 5xx that outlasted the retries."""
