"""HTTP client for the Cliniko API: shard routing, auth, pagination, client-side rate limit, 429 handling, retries."""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cliniko_sync import __version__
from cliniko_sync.assumptions import INACTIVE_PRACTITIONERS
from cliniko_sync.cliniko.endpoints import Endpoint, endpoint
from cliniko_sync.cliniko.waits import OnWait, Wait, pause
from cliniko_sync.errors import (
    AssumptionViolatedError,
    ClinikoAPIError,
    ClinikoRefusedError,
    ClinikoUnavailableError,
    ConfigError,
    CredentialsRejectedError,
    UsageError,
)

if TYPE_CHECKING:
    import requests
    from tenacity import RetryCallState

    from cliniko_sync.cliniko.ratelimit import SlidingWindowLimiter

log = logging.getLogger(__name__)

DEFAULT_SHARD = "au1"
_SHARD = re.compile(r"[a-z]{2}\d{1,2}", re.IGNORECASE)
_NAME = re.compile(r"[a-z_]+")
_SORT = re.compile(r"[a-z_]+(?::(?:asc|desc))?(?:,[a-z_]+(?::(?:asc|desc))?)*")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_PRINTABLE_WORD = re.compile(r"[^\x00-\x20\x7f-\x9f]+")
FILTER_OPERATORS = frozenset({"=", "!=", ">=", ">", "<=", "<", "~", "~~", "?", "!?", "*"})
_VALUELESS_OPERATORS = frozenset({"?", "!?", "*"})
MAX_PER_PAGE = 100
# Shortest wait after a 429, so a zero, negative or past reset time never turns into a request storm.
MIN_RATE_LIMIT_WAIT = 0.5
# An X-RateLimit-Reset below this cannot be an epoch time; read it as seconds to wait.
_EPOCH_FLOOR = 1e8


@dataclass(frozen=True)
class Filter:
    """One `q[]` condition, rendered `field:<op><value>`; values are typed so user text is never pasted in raw."""

    field: str
    op: str
    value: str | int | datetime | Sequence[str | int] | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.field):
            raise ValueError(f"bad filter field {self.field!r}")
        if self.op not in FILTER_OPERATORS:
            raise ValueError(f"bad filter operator {self.op!r}")
        if isinstance(self.value, list):
            # Stored as a tuple so filters stay hashable (streams keep them in frozen dataclasses and sets).
            object.__setattr__(self, "value", tuple(self.value))
        if (self.value is None) != (self.op in _VALUELESS_OPERATORS):
            raise ValueError(f"filter operator {self.op!r} {'takes no' if self.value is not None else 'needs a'} value")
        self.render()

    def render(self) -> str:
        return f"{self.field}:{self.op}{_render_value(self.value)}"

    def __str__(self) -> str:
        return self.render()


def _render_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("filter times must be timezone-aware")
        # strftime drops the fraction: whole seconds, rounded down, as Cliniko documents its filter values.
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str):
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ValueError("filter values cannot hold control characters")
        return value
    raise ValueError(f"unsupported filter value type {type(value).__name__}")


def _render_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        items = [_render_scalar(item) for item in value]
        if not items or any("," in item or not item for item in items):
            raise ValueError("a filter list needs non-empty items without commas")
        return ",".join(items)
    return _render_scalar(value)


@dataclass
class Page:
    """One page of a listing, as Cliniko sent it."""

    records: list[dict[str, Any]]
    total_entries: int | None
    next_url: str | None  # only a "more pages" signal: never followed (it may lack our filters and sort)
    number: int
    per_page: int = MAX_PER_PAGE
    # The body as it came, for the mirror's SQL to read itself (no json.dumps of what json.loads just built); None
    # when it is not plain UTF-8 text.
    text: str | None = None

    def has_more(self) -> bool:
        """Whether the listing goes on after this page: a next link, or a total beyond the records up to this page."""
        if self.next_url is not None:
            return True
        read = (self.number - 1) * self.per_page + len(self.records)
        return self.total_entries is not None and self.total_entries > read and bool(self.records)


@dataclass
class ClientStats:
    """What a client did so far: for sync_log and progress reports."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    rate_limit_wait_seconds: float = 0.0
    throttle_wait_seconds: float = 0.0
    # Which of the rate-limit headers the latest 429 carried (check-credentials --deep reports them).
    rate_limit_headers: tuple[str, ...] = ()


def key_hint(api_key: str) -> str:
    """`…h7Qz-au1`: the last 4 characters of the key's body and its shard suffix, so two keys can be told apart in
    messages; never more (nothing of a body too short to spare 4 characters, i.e. under 8)."""
    body, _, shard = api_key.rpartition("-") if "-" in api_key else (api_key, "", "")
    if shard and not _SHARD.fullmatch(shard):  # not a shard suffix: all of it is the body
        body, shard = api_key, ""
    suffix = f"-{shard}" if shard else ""
    return ("…" + body[-4:] if len(body) >= 8 else "…") + suffix


def shard_for_key(api_key: str) -> str:
    """The shard named by the key's `-<shard>` suffix (e.g. "au4"); a key without a suffix is an old au1 key."""
    if "-" not in api_key:
        return DEFAULT_SHARD
    suffix = api_key.rsplit("-", 1)[1]
    if not _SHARD.fullmatch(suffix):
        raise UsageError(
            f"API key {key_hint(api_key)} ends in an unknown shard suffix (expected e.g. -au1, -uk2 or no suffix)"
        )
    return suffix.lower()


def validate_api_key_shape(api_key: str) -> None:
    """Offline check of a key's shape: non-empty, printable ASCII without spaces, optional valid shard suffix."""
    if not api_key:
        raise UsageError("the API key is empty")
    if _CONTROL_OR_SPACE.search(api_key) or not api_key.isascii():
        raise UsageError(f"API key {key_hint(api_key)} contains whitespace or characters an API key cannot contain")
    shard_for_key(api_key)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: what messages may name (no credentials, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _redact(url: str) -> str:
    """The URL without user info and query: filter values may hold patient data."""
    return _origin(url) + urlsplit(url).path


def check_api_url(url: str) -> None:
    """Accept only https API URLs, or http on a loopback host (the emulator); raises UsageError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        raise UsageError("the API URL is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise UsageError("the API URL must not carry credentials")
    if not parts.hostname or parts.query or parts.fragment:
        raise UsageError(f"the API URL must look like https://api.au1.cliniko.com/v1, not {_redact(url)}")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return
    raise UsageError(f"the API URL must use https (http only on a loopback host): {_redact(url)}")


def base_url_for(api_key: str, api_url: str | None = None) -> str:
    """https://api.<shard>.cliniko.com/v1 for the key's shard, or the stored `api_url` override."""
    if api_url:
        check_api_url(api_url)
        return api_url.rstrip("/")
    return f"https://api.{shard_for_key(api_key)}.cliniko.com/v1"


class _Transient(Exception):
    """A failure worth another attempt; `malformed` says whether the body (not the network) was at fault."""

    def __init__(self, reason: str, *, malformed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.malformed = malformed


class _RateLimited(Exception):
    """A 429; `wait` is what the server asked for (None: it did not say)."""

    def __init__(self, wait: float | None) -> None:
        super().__init__("HTTP 429")
        self.wait = wait


def _server_requested_wait(headers: Any, now: float) -> float | None:
    """Seconds until the server lets us in again: X-RateLimit-Reset (epoch), else Retry-After (seconds or date)."""
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            value = None
        if value is not None:
            return value - now if value >= _EPOCH_FLOOR else value
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return float(retry_after)
        except ValueError:
            pass
        try:
            moment = parsedate_to_datetime(retry_after)
        except (TypeError, ValueError, IndexError):
            return None
        # An HTTP date is GMT even when it does not say so.
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() - now
    return None


class _Attempts:
    """The retry policy of one request, declared once: which failures retry, how long to wait, when to give up.

    Ordinary failures (5xx, timeouts, connection errors, broken bodies) get `max_attempts` tries with exponential
    backoff and jitter. A 429 does not use up those tries: it waits what the server asked (bounded), and only the
    overall time budget ends a long 429 storm.
    """

    def __init__(self, client: ClinikoClient) -> None:
        self.client = client
        self.failures = 0
        self.rate_limited = 0

    def retry(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        return outcome is not None and isinstance(outcome.exception(), (_Transient, _RateLimited))

    def wait(self, retry_state: RetryCallState) -> float:
        client = self.client
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, _RateLimited):
            if error.wait is not None and error.wait > 0:
                wait = error.wait + random.uniform(0.05, 0.5)
            else:
                # No usable time (missing, or already past: clocks differ): back off further on each 429 in a row.
                wait = MIN_RATE_LIMIT_WAIT * 2 ** (self.rate_limited - 1)
            return min(client.max_wait, max(wait, MIN_RATE_LIMIT_WAIT))
        return min(client.max_wait, 2.0 ** (self.failures - 1) + random.uniform(0, 1))

    def stop(self, retry_state: RetryCallState) -> bool:
        client = self.client
        if self.failures >= client.max_attempts:
            return True
        spent = max(retry_state.seconds_since_start or 0.0, retry_state.idle_for)
        return spent + retry_state.upcoming_sleep > client.max_total_retry_seconds

    def before_sleep(self, retry_state: RetryCallState) -> None:
        client = self.client
        client.stats.retries += 1
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if isinstance(error, _RateLimited):
            client.stats.rate_limit_wait_seconds += retry_state.upcoming_sleep
            client.report_wait(Wait("rate_limit", retry_state.upcoming_sleep, reason="HTTP 429"))
        elif isinstance(error, _Transient):
            reason = "unreachable" if error.reason == "connection failed" else error.reason
            wait = Wait("retry", retry_state.upcoming_sleep, self.failures + 1, client.max_attempts, reason)
            client.report_wait(wait)


class _KeyAuth:
    """Basic auth with the key as user and an empty password; its repr never shows the key."""

    def __init__(self, api_key: str) -> None:
        self._header = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
        self._hint = key_hint(api_key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return f"<Cliniko API key {self._hint}>"


# What requests reads from the environment when it trusts it (proxies, CA bundle); the settings are worked out again
# only when one of these changes.
_ENVIRONMENT_VARIABLES = tuple(
    name for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for name in (base, base.upper())
) + ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _environment_settings(base_url: str) -> tuple[dict[str, str], bool | str]:
    """The proxies and the certificate check (True, or a CA bundle's path) requests would use for `base_url`."""
    return _environment_settings_for(base_url, tuple(os.environ.get(name) for name in _ENVIRONMENT_VARIABLES))


@functools.lru_cache(maxsize=16)
def _environment_settings_for(base_url: str, variables: tuple[str | None, ...]) -> tuple[dict[str, str], bool | str]:
    import requests

    with requests.Session() as session:
        settings = session.merge_environment_settings(base_url, {}, None, None, None)
    verify = settings["verify"]
    return dict(settings["proxies"]), True if verify is None else verify


class ClinikoClient:
    """One API key's connection to Cliniko. Not shared between threads: give each thread its own client
    (they still share the key's rate limiter)."""

    def __init__(
        self,
        api_key: str,
        *,
        contact_email: str,
        api_url: str | None = None,
        rate_limit: int | None = 200,
        rate_window: float = 60.0,
        timeout: float = 30.0,
        max_attempts: int = 6,
        max_wait: float = 120.0,
        max_total_retry_seconds: float = 900.0,
        stop: threading.Event | None = None,
        on_wait: OnWait | None = None,
    ) -> None:
        import requests

        from cliniko_sync.cliniko.ratelimit import limiter_for

        validate_api_key_shape(api_key)
        if not contact_email or "@" not in contact_email or _CONTROL_OR_SPACE.search(contact_email):
            raise ConfigError("a contact email address is required for the User-Agent Cliniko asks for")
        self.base_url = base_url_for(api_key, api_url)
        self.shard = shard_for_key(api_key)
        self.stats = ClientStats()
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.max_wait = max(MIN_RATE_LIMIT_WAIT, max_wait)
        self.max_total_retry_seconds = max_total_retry_seconds
        # `stop` cuts every wait short (StopRequested); `on_wait` hears of each wait before it starts.
        self.stop = stop
        self.on_wait = on_wait
        # Every wait between attempts goes through here (tests replace it to record waits without sleeping).
        self.sleep: Callable[[float], None] = lambda seconds: pause(seconds, self.stop)
        self._key_hint = key_hint(api_key)
        self._limiter: SlidingWindowLimiter | None = (
            limiter_for(api_key, rate_limit, rate_window) if rate_limit is not None else None
        )
        # How many of the key's limiter slots this client's requests leave to more urgent ones (none by default).
        self.reserve: Callable[[], int] | None = None
        self.rate_limit_slots = rate_limit or 0  # requests the key's limiter allows in its window (0: no limiter)
        self._session = requests.Session()
        self._session.auth = _KeyAuth(api_key)
        self._session.headers.update(
            {"Accept": "application/json", "User-Agent": f"cliniko-sync/{__version__} ({contact_email})"}
        )
        # The environment's proxy and CA bundle for the one host this client talks to, instead of requests scanning
        # the whole environment on every request (about a millisecond of CPU each time).
        proxies, verify = _environment_settings(self.base_url)
        self._session.proxies.update(proxies)
        self._session.verify = verify
        self._session.trust_env = False
        base = urlsplit(self.base_url)
        self._base_origin = (base.scheme, base.hostname, base.port or (443 if base.scheme == "https" else 80))
        self._base_path = base.path.rstrip("/")

    def report_wait(self, wait: Wait) -> None:
        """Tell the caller (progress bar, log) what the client waits for; a broken callback never stops a sync."""
        if self.on_wait is None:
            return
        try:
            self.on_wait(wait)
        except Exception:  # a display problem must not fail the run
            log.debug("on_wait callback failed", exc_info=True)

    def __repr__(self) -> str:
        return f"ClinikoClient(base_url={self.base_url!r}, key={self._key_hint!r})"

    def __enter__(self) -> ClinikoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # -- listings ---------------------------------------------------------------------------------------------

    def list_page(
        self,
        path: str,
        *,
        filters: Sequence[Filter] = (),
        sort: str | None = None,
        page: int = 1,
        per_page: int = MAX_PER_PAGE,
    ) -> Page:
        """One page of the documented list endpoint at `path` (e.g. "patients", "practitioners/inactive").

        The request is built from our own parameters every time (page numbers included): Cliniko's next links may
        carry only `page`, so following one would silently drop the filters and sort.
        """
        if page < 1:
            raise ValueError("page numbers start at 1")
        listing = endpoint(path)
        params = [("page", str(page)), *self._listing_params(listing, filters, sort, per_page)]
        url = f"{self.base_url}/{path}"
        return self._page(url, params, envelope=listing.envelope, number=page, per_page=per_page)

    @staticmethod
    def _listing_params(
        listing: Endpoint, filters: Sequence[Filter], sort: str | None, per_page: int
    ) -> list[tuple[str, str]]:
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1..{MAX_PER_PAGE}")
        params = [("per_page", str(per_page))]
        if sort is not None:
            if not _SORT.fullmatch(sort):
                raise ValueError(f"bad sort {sort!r}")
            listing.check_sort(sort)
            params.append(("sort", sort))
        for item in filters:
            listing.check_filter(item.field, item.op)
            params.append(("q[]", item.render()))
        return params

    def _page(self, url: str, params: list[tuple[str, str]], *, envelope: str, number: int, per_page: int) -> Page:
        where = f"{_redact(url)} (page {number})"
        body, content = self._request_json(url, params, where=where)
        if not isinstance(body, dict):
            raise ClinikoAPIError(f"Cliniko sent a body that is not a listing for GET {where}")
        records = body.get(envelope)
        if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
            raise ClinikoAPIError(f"Cliniko sent a listing without a list of {envelope} for GET {where}")
        total = body.get("total_entries")
        links = body.get("links")
        next_url = links.get("next") if isinstance(links, dict) else None
        return Page(
            records=records,
            total_entries=total if isinstance(total, int) and not isinstance(total, bool) else None,
            next_url=next_url if isinstance(next_url, str) and next_url else None,
            number=number,
            per_page=per_page,
            text=_body_text(content),
        )

    # -- one request, with its retries ------------------------------------------------------------------------

    def _request_json(self, url: str, params: list[tuple[str, str]] | None, *, where: str) -> tuple[Any, bytes]:
        """The parsed JSON body of a GET, and its bytes."""
        from tenacity import Retrying

        policy = _Attempts(self)
        retrying = Retrying(
            retry=policy.retry,
            wait=policy.wait,
            stop=policy.stop,
            before_sleep=policy.before_sleep,
            sleep=lambda seconds: self.sleep(seconds),
            reraise=True,
        )
        try:
            return retrying(self._attempt, url, params, where, policy)
        except _RateLimited:
            raise ClinikoUnavailableError(
                f"Cliniko kept answering 429 (rate limited) for GET {where} after {policy.rate_limited} tries"
            ) from None
        except _Transient as error:
            attempts = f"{policy.failures} attempt{'s' if policy.failures != 1 else ''}"
            if error.malformed:
                raise ClinikoAPIError(f"Cliniko sent {error.reason} for GET {where} ({attempts})") from None
            message = f"Cliniko did not answer GET {where} after {attempts}: {error.reason}"
            raise ClinikoUnavailableError(message) from None

    def _attempt(
        self, url: str, params: list[tuple[str, str]] | None, where: str, policy: _Attempts
    ) -> tuple[Any, bytes]:
        try:
            return self._send(url, params, where)
        except _Transient:
            policy.failures += 1
            raise
        except _RateLimited:
            policy.rate_limited += 1
            self.stats.rate_limited += 1
            raise

    def _send(self, url: str, params: list[tuple[str, str]] | None, where: str) -> tuple[Any, bytes]:
        started = time.monotonic()
        if self._limiter is None:
            response = self._exchange(url, params)
        else:
            with self._limiter.request(stop=self.stop, on_wait=self.report_wait, reserve=self.reserve) as waited:
                self.stats.throttle_wait_seconds += waited
                response = self._exchange(url, params)
        status = response.status_code
        log.debug("GET %s -> %s in %.3fs", urlsplit(url).path, status, time.monotonic() - started)
        if status == 429:
            self.stats.rate_limit_headers = tuple(
                name for name in ("X-RateLimit-Reset", "Retry-After") if name in response.headers
            )
            raise _RateLimited(_server_requested_wait(response.headers, time.time()))
        if status >= 500:
            raise _Transient(f"HTTP {status}")
        if status in (401, 403):
            raise CredentialsRejectedError(
                f"Cliniko rejected the API key {self._key_hint} (HTTP {status}) for {_origin(self.base_url)}"
            )
        if 300 <= status < 400:
            raise ClinikoAPIError(f"Cliniko redirected GET {where} (HTTP {status}); redirects are not followed")
        if status == 404:
            path = urlsplit(url).path[len(self._base_path) + 1 :]
            if path == "practitioners/inactive":
                raise AssumptionViolatedError(path, INACTIVE_PRACTITIONERS, "HTTP 404")
            raise ClinikoAPIError(f"not found: GET {where} (HTTP 404)")
        if status in (400, 422):
            path = urlsplit(url).path[len(self._base_path) + 1 :]
            raise ClinikoRefusedError(path, status, _refusal_message(response.content))
        if status != 200:
            raise ClinikoAPIError(f"Cliniko answered HTTP {status} for GET {where}")
        try:
            return json.loads(response.content), response.content
        except ValueError:
            raise _Transient("a body that is not valid JSON", malformed=True) from None

    def _exchange(self, url: str, params: list[tuple[str, str]] | None) -> requests.Response:
        import requests

        self.stats.requests += 1
        try:
            # Not streamed: the whole body is read here, so a connection cut mid-body is a failed attempt.
            response = self._session.get(url, params=params, timeout=self.timeout, allow_redirects=False)
        except requests.exceptions.Timeout:
            raise _Transient("timed out") from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
            raise _Transient("a truncated body", malformed=True) from None
        except requests.exceptions.ConnectionError:
            raise _Transient("connection failed") from None
        return response


def _body_text(content: bytes) -> str | None:
    """A body as text PostgreSQL reads the way json.loads did: UTF-8 without a byte-order mark (json.loads also
    takes UTF-16 and UTF-32, and skips the mark)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if text.startswith("\ufeff") else text


def _refusal_message(content: bytes) -> str:
    """Cliniko's `message` for a refused request (e.g. "This column is not searchable."), plus the field names (never
    values) a 422 body's `errors` lists; printable text only, cut short."""
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    message = body.get("message")
    text = " ".join(_PRINTABLE_WORD.findall(message))[:200] if isinstance(message, str) else ""
    errors = body.get("errors")
    if isinstance(errors, dict):
        names = sorted(str(name) for name in errors if _NAME.fullmatch(str(name)))
        if names:
            text = f"{text} (invalid {', '.join(names)})".strip()
    return text
