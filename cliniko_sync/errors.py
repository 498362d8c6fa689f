"""The tool's own exceptions, each carrying the sysexits code the CLI exits with (DESIGN §7)."""

from __future__ import annotations

from cliniko_sync.assumptions import DOCUMENTED_FILTERS, Assumption

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


DEEP_CHECK_HINT = 'see "What cliniko-sync assumes about the Cliniko API" in the docs; run check-credentials --deep'


class ClinikoRefusedError(ClinikoAPIError):
    """Cliniko answered 400 or 422: it refused the request's parameters (e.g. a filter it does not document)."""

    def __init__(self, path: str, status: int, cliniko_message: str) -> None:
        said = f": {cliniko_message}" if cliniko_message else ""
        super().__init__(
            f"Cliniko refused the parameters of GET /{path} (HTTP {status}{said}); "
            f"assumption {DOCUMENTED_FILTERS} failed; {DEEP_CHECK_HINT}"
        )
        self.path = path
        self.status = status
        self.cliniko_message = cliniko_message


class AssumptionViolatedError(ClinikoAPIError):
    """Cliniko answered in a way the crawl's assumptions about the API rule out (e.g. a page out of the asked order)."""

    def __init__(self, path: str, assumption: Assumption, what_happened: str) -> None:
        super().__init__(
            f"Cliniko's answer for GET /{path} breaks the assumption {assumption}: {what_happened}; {DEEP_CHECK_HINT}"
        )
        self.path = path
        self.assumption = assumption
        self.what_happened_on = f"Cliniko's page of /{path} broke the assumption {assumption}: {what_happened}"


class ClinikoUnavailableError(UnavailableError):
    """Timeouts, connection errors or 5xx that outlasted the retries."""
