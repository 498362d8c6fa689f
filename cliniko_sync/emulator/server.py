"""The emulator's HTTP API: Cliniko's endpoints, Basic auth, rate limit and fault injection on a loopback port.

Strict by default (documented q[] fields only, active/inactive practitioners, hidden sub-second timestamps, links
with page and per_page only); Quirks switch single permissive or broken behaviours back on.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cliniko_sync.emulator.dataset import Clinic
from cliniko_sync.emulator.query import (
    BOOLEAN,
    NUMERIC,
    SPECS,
    Condition,
    ListQuery,
    QueryError,
    QueryRules,
    ResourceSpec,
    filter_field,
    find_record,
    parse_condition,
    parse_list_query,
    permissive_spec,
    run_list_query,
    sort_records,
)
from cliniko_sync.emulator.quirks import BOOLEAN_QUIRKS, Quirks
from cliniko_sync.emulator.render import render

__all__ = ["BOOLEAN_QUIRKS", "EmulatorServer", "Faults", "Quirks", "RequestLogEntry", "serve_until_interrupted"]

SHARD_SUFFIX = re.compile(r"(?P<base>.+)-(?P<shard>[a-z]{2}\d{1,2})")
BOOKINGS = ("group_appointments", "individual_appointments")  # the lists whose records have /{id}/attendees
ROUTE = re.compile(r"/v1/(?P<resource>[a-z_]+)(?:/(?P<id>[^/]+)(?:/(?P<sub>attendees))?)?/?")
ACCESS_DENIED = b"HTTP Basic: Access denied.\n"
SHARD_HOST = re.compile(r"api\.(?P<shard>[a-z]{2}\d{1,2})\.cliniko\.com(:\d+)?", re.IGNORECASE)


@dataclass
class Faults:
    """Misbehaviour to inject; every rate is a fraction of requests in [0, 1]. All off by default."""

    rate_limit_burst_seconds: float = 0.0  # answer 429 to everything for this long from the next request on
    error_rate: float = 0.0  # 500, 502 or 503
    hang_rate: float = 0.0  # sleep hang_seconds before answering
    hang_seconds: float = 0.0
    malformed_rate: float = 0.0  # 200 with a body that is not JSON
    truncated_rate: float = 0.0  # 200 with the body cut short (Content-Length of the cut body, or none)
    retry_after: bool = False  # send Retry-After (seconds) on 429
    reset_header: bool = True  # send X-RateLimit-Reset (epoch seconds) on 429
    mutate_every: int = 0  # every K list requests, touch a random record of the listed resource
    clock_offset_seconds: int = 0  # Cliniko's clock runs this far ahead of the clinic's for new updated_at values
    duplicate_rate: float = 0.0  # a later page also carries the previous page's last record
    shuffle: float = 0.0  # a page comes out of order
    # The faults that fail an attempt (error, hang, malformed, truncated) are rolled per request target: the n-th
    # request for one URL gets the same outcome whatever other requests ran between, so a sync's outcome does not
    # depend on how its threads interleave. The others share one generator.
    seed: int = 0


@dataclass(frozen=True)
class RequestLogEntry:
    time: float  # time.monotonic()
    key_fingerprint: str | None  # a short hash of the key without its shard suffix, never the key
    method: str
    path: str  # path and query string
    status: int


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    content_length: bool = True


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers)


def _not_found() -> _Response:
    return _json(404, {"message": "Not Found"})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    emulator: EmulatorServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.emulator._connections.add(self.connection)

    def finish(self) -> None:
        self.server.emulator._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # the request log replaces stderr lines
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        emulator = self.server.emulator
        if emulator._stopping:
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        key, response = emulator._handle(self.command, self.path, self.headers)
        emulator._log(key, self.command, self.path, response.status)
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            for name, value in response.headers:
                self.send_header(name, value)
            if response.content_length:
                self.send_header("Content-Length", str(len(response.body)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:  # the client gave up (a hang fault outlived its timeout)
            self.close_connection = True


# The throwaway key the emulator accepts unless told otherwise (the demo, `cliniko-sync emulator`); never a Cliniko key.
DEMO_API_KEY = "demo-key-au1"


class EmulatorServer:
    """A local Cliniko API over `clinic`. `with EmulatorServer(clinic) as server:` starts and stops it."""

    def __init__(
        self,
        clinic: Clinic,
        *,
        api_keys: Iterable[str] = (DEMO_API_KEY,),
        shard: str = "au1",
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int | None = 200,
        rate_window: float = 60.0,
        latency_ms: float = 0,
        require_user_agent: bool = True,
        faults: Faults | None = None,
        quirks: Quirks | None = None,
    ) -> None:
        self.clinic = clinic
        self.quirks = quirks or Quirks()
        if self.quirks.whole_second_storage:
            clinic.drop_fractions()
        if self.quirks.group_attendees_only:
            clinic.drop_individual_attendees()
        self.shard = shard
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.latency_ms = latency_ms
        self.require_user_agent = require_user_agent
        self.request_log: list[RequestLogEntry] = []
        self._lock = threading.Lock()
        self._keys = {self._key_base(key) for key in api_keys}
        self._recent: dict[str, deque[float]] = {}
        self._list_requests = 0
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = False
        self.set_faults(faults or Faults())

    # --- lifecycle ---

    def start(self) -> EmulatorServer:
        """Bind and serve in a background thread (port 0 picks a free port; see base_url)."""
        if self._server is not None:
            return self
        self._stopping = False
        server = _HTTPServer((self.host, self.port), _Handler)
        server.emulator = self
        self.port = server.server_address[1]
        self._server = server
        # A short poll interval makes stop() quick (shutdown waits for the serving loop to notice): the tests start
        # and stop a server hundreds of times, and 100 idle wake-ups a second cost nothing measurable.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="cliniko-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so clients see the server gone."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.shutdown()
        server.server_close()
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}/v1"

    # --- run-time controls ---

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (or change some fields of the current ones); a 429 burst starts at the next request."""
        with self._lock:
            current: Faults = faults or getattr(self, "_faults", None) or Faults()
            self._faults = replace(current, **changes)
            self._faults_set_at: float | None = None  # the burst starts at the first request after this
            self._fault_rng = random.Random(self._faults.seed)
            self._target_rolls: Counter[tuple[str, str]] = Counter()
        with self.clinic.lock:
            self.clinic.clock_offset_seconds = self._faults.clock_offset_seconds
        return self._faults

    def revoke_key(self, key: str) -> None:
        with self._lock:
            self._keys.discard(self._key_base(key))

    def add_key(self, key: str) -> None:
        with self._lock:
            self._keys.add(self._key_base(key))

    def requests_for(self, key: str) -> list[RequestLogEntry]:
        """The logged requests made with a key."""
        wanted = fingerprint(self._key_base(key))
        with self._lock:
            return [entry for entry in self.request_log if entry.key_fingerprint == wanted]

    # --- request handling ---

    def _key_base(self, key: str) -> str:
        match = SHARD_SUFFIX.fullmatch(key)
        return match["base"] if match else key

    def _authenticate(self, header: str | None) -> str | None:
        """The key's base (without suffix) when it is known and names this shard (or none), else None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        key = decoded.partition(":")[0]
        match = SHARD_SUFFIX.fullmatch(key)
        if match and match["shard"] != self.shard:
            return None
        base = match["base"] if match else key
        with self._lock:
            return base if base in self._keys else None

    def _log(self, key: str | None, method: str, path: str, status: int) -> None:
        entry = RequestLogEntry(time.monotonic(), fingerprint(key) if key else None, method, path, status)
        with self._lock:
            self.request_log.append(entry)

    def _too_many(self, reset_in: float, faults: Faults) -> _Response:
        headers = []
        if faults.reset_header:
            headers.append(("X-RateLimit-Reset", str(math.ceil(time.time() + reset_in))))
        if faults.retry_after:
            headers.append(("Retry-After", str(max(1, math.ceil(reset_in)))))
        return _json(429, {"message": "Too Many Requests"}, tuple(headers))

    def _rate_limited(self, key: str) -> float | None:
        """Seconds until the oldest request leaves the window when this key is over the limit, else None."""
        if self.rate_limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(key, deque())
            while recent and recent[0] <= now - self.rate_window:
                recent.popleft()
            if len(recent) >= self.rate_limit:
                return recent[0] + self.rate_window - now
            recent.append(now)
        return None

    def _roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._fault_rng.random() < rate

    def _roll_for(self, rate: float, kind: str, target: str) -> bool:
        """A fault that fails the attempt, rolled for the n-th request of this target alone (see Faults.seed)."""
        if rate <= 0:
            return False
        with self._lock:
            nth = self._target_rolls[kind, target]
            self._target_rolls[kind, target] = nth + 1
            seed = self._faults.seed
        return random.Random(f"{seed}:{kind}:{target}:{nth}").random() < rate

    def _handle(self, method: str, target: str, headers: Any) -> tuple[str | None, _Response]:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        if self.require_user_agent and not headers.get("User-Agent"):
            return None, _Response(403, b"Requires a user agent\n", "text/plain; charset=utf-8")
        host = headers.get("Host")
        shard_host = SHARD_HOST.fullmatch(host or "")
        key = self._authenticate(headers.get("Authorization"))
        if key is None or (shard_host and shard_host["shard"].lower() != self.shard):
            return None, _Response(
                401, ACCESS_DENIED, "text/plain; charset=utf-8", (("WWW-Authenticate", 'Basic realm="Application"'),)
            )
        wait = self._rate_limited(key)
        faults = self.faults
        if wait is not None:
            return key, self._too_many(wait, faults)
        with self._lock:
            if self._faults_set_at is None:
                self._faults_set_at = time.monotonic()
            burst_left = self._faults_set_at + faults.rate_limit_burst_seconds - time.monotonic()
        if burst_left > 0:
            return key, self._too_many(burst_left, faults)
        if self._roll_for(faults.hang_rate, "hang", target):
            time.sleep(faults.hang_seconds)
        if self._roll_for(faults.error_rate, "error", target):
            with self._lock:
                status = self._fault_rng.choice((500, 502, 503))
            return key, _json(status, {"message": "Synthetic server error"})
        if method != "GET":
            return key, _json(405, {"message": "Method Not Allowed: the emulator is read-only"})
        base = f"http://{host}/v1" if host else self.base_url
        response = self._route(target, base, faults)
        if response.status == 200:
            response = self._corrupt(response, faults, target)
        return key, response

    def _route(self, target: str, base: str, faults: Faults) -> _Response:
        parts = urlsplit(target)
        match = ROUTE.fullmatch(parts.path)
        if not match or match["resource"] not in SPECS:
            return _not_found()
        resource, record_id, sub = match["resource"], match["id"], match["sub"]
        params = parse_qsl(parts.query, keep_blank_values=True)
        try:
            if sub:
                if resource not in BOOKINGS:
                    return _not_found()
                return self._booking_attendees(resource, record_id, params, base, faults)
            if resource == "practitioners" and record_id == "inactive":
                if self.quirks.no_inactive_practitioners_endpoint:
                    return _not_found()
                inactive = Condition("active", "=", BOOLEAN, (False,))
                return self._list(resource, params, base, f"{base}/practitioners/inactive", faults, inactive)
            if record_id is not None:
                return self._show(resource, record_id, params, base)
            extra = (Condition("active", "=", BOOLEAN, (True,)),) if resource == "practitioners" else ()
            return self._list(resource, params, base, f"{base}/{resource}", faults, *extra)
        except QueryError as exc:
            status = self.quirks.refused_status if exc.unsearchable else 400
            return _json(status, {"message": exc.message})

    def _spec(self, resource: str) -> ResourceSpec:
        return permissive_spec(resource) if self.quirks.accept_undocumented_filters else SPECS[resource]

    def _rules(self, endpoint: str) -> QueryRules:
        """The quirks that bend parameter handling on one endpoint (its path after /v1/, ids as {id})."""
        quirks = self.quirks
        return QueryRules(
            ignored=frozenset(quirks.ignore_filters),
            refused=frozenset(name for path, name in quirks.refuse_filters if path == endpoint),
            ignore_sort=quirks.ignore_sort,
        )

    def _show(self, resource: str, record_id: str, params: list[tuple[str, str]], base: str) -> _Response:
        """GET by id. Its q[] takes only the fields a default exclusion hides (the spec documents exactly those for
        patients and individual appointments; the same rule is inferred for the others)."""
        documented = SPECS[resource]
        spec = self._spec(resource)
        if not self.quirks.accept_undocumented_filters:
            fields = {name: documented.fields[name] for name in documented.hidden_unless_named}
            spec = ResourceSpec(resource, fields, documented.hidden_unless_named, documented.getters)
        rules = self._rules(f"{resource}/{{id}}")
        texts = [value for name, value in params if name == "q[]" and filter_field(value) not in rules.ignored]
        filters = [parse_condition(text, spec, rules.refused) for text in texts]
        with self.clinic.lock:
            tables = self.clinic.listed_tables(resource)
            found = (find_record(self.clinic, table, spec, record_id, filters) for table in tables)
            record = next((item for item in found if item is not None), None)
            if record is None:
                return _not_found()
            return _json(200, render(resource, record, base, self.clinic, self.quirks))

    def _booking_attendees(
        self, resource: str, booking_id: str, params: list[tuple[str, str]], base: str, faults: Faults
    ) -> _Response:
        """/group_appointments/{id}/attendees (deprecated) and /individual_appointments/{id}/attendees: the attendees
        list narrowed to one booking (an individual appointment's own record; none under the group_attendees_only
        quirk)."""
        with self.clinic.lock:
            table = self.clinic.tables[resource]
            booking = table.get(int(booking_id)) if booking_id.isdigit() else None
            if booking is None:
                return _not_found()
        only = Condition("booking_id", "=", NUMERIC, (booking.id,))
        return self._list("attendees", params, base, f"{base}/{resource}/{booking_id}/attendees", faults, only)

    def _list(
        self,
        resource: str,
        params: list[tuple[str, str]],
        base: str,
        url: str,
        faults: Faults,
        *extra: Condition,
    ) -> _Response:
        spec = self._spec(resource)
        endpoint = url.removeprefix(f"{base}/")
        if resource == "attendees" and endpoint != "attendees":
            endpoint = f"{endpoint.split('/')[0]}/{{id}}/attendees"
        query = parse_list_query(params, spec, self._rules(endpoint))
        with self.clinic.lock:
            self._maybe_mutate(resource, faults)
            records, total = self._run(resource, spec, query, extra)
            if query.page > 1 and records and self._roll(faults.duplicate_rate):
                previous, _ = self._run(resource, spec, replace(query, page=query.page - 1), extra)
                records = previous[-1:] + records
            if self._roll(faults.shuffle):
                records = records[:]
                with self._lock:
                    self._fault_rng.shuffle(records)
            rendered = [render(resource, record, base, self.clinic, self.quirks) for record in records]
        keep = self.quirks.next_links_keep_query
        links = {"self": _page_url(url, query, query.page, keep)}
        if query.page > 1:
            links["previous"] = _page_url(url, query, query.page - 1, keep)
        if query.page * query.per_page < total:
            links["next"] = _page_url(url, query, query.page + 1, keep)
        return _json(200, {resource: rendered, "total_entries": total, "links": links})

    def _run(
        self, resource: str, spec: ResourceSpec, query: ListQuery, extra: tuple[Condition, ...]
    ) -> tuple[list[Any], int]:
        """One page of a listing. /attendees lists two tables (group-class attendees, individual appointments'
        records): the page is merged from the first `page × per_page` records of each, in the query's order."""
        clinic = self.clinic
        tables = clinic.listed_tables(resource)
        if len(tables) == 1:
            return run_list_query(clinic, tables[0], spec, query, extra)
        head = replace(query, page=1, per_page=query.page * query.per_page)
        found: list[Any] = []
        total = 0
        for table in tables:
            records, count = run_list_query(clinic, table, spec, head, extra)
            found += records
            total += count
        offset = (query.page - 1) * query.per_page
        return sort_records(found, spec, clinic, query)[offset : offset + query.per_page], total

    def _maybe_mutate(self, resource: str, faults: Faults) -> None:
        """The mutate_every fault: a record changes mid-crawl and moves to the end of an updated_at crawl."""
        if faults.mutate_every <= 0:
            return
        with self._lock:
            self._list_requests += 1
            due = self._list_requests % faults.mutate_every == 0
        table = self.clinic.tables[resource]
        if due and len(table):
            with self._lock:
                position = self._fault_rng.randrange(len(table))
            self.clinic.touch(resource, table.indexes["id"].entries[position][1])

    def _corrupt(self, response: _Response, faults: Faults, target: str) -> _Response:
        if self._roll_for(faults.malformed_rate, "malformed", target):
            return _Response(200, b'{"synthetic": "malformed", ]' + response.body[:40])
        if self._roll_for(faults.truncated_rate, "truncated", target):
            cut = response.body[: max(1, len(response.body) // 2)]
            with self._lock:
                declare_length = self._fault_rng.random() < 0.5
            return _Response(200, cut, content_length=declare_length)
        return response


def _page_url(url: str, query: ListQuery, page: int, keep_query: bool) -> str:
    """A page link as in Cliniko's documented examples: page and per_page only (q[] and sort too with the quirk)."""
    params: list[tuple[str, str | int]] = [("page", page), ("per_page", query.per_page)]
    if keep_query:
        params += [("q[]", text) for text in query.filter_texts]
        if query.sort_text is not None:
            params.append(("sort", query.sort_text))
    return f"{url}?{urlencode(params)}"


def _describe(quirks: Quirks) -> str:
    on = [name for name in BOOLEAN_QUIRKS if getattr(quirks, name)]
    return f"Quirks on (not the real API's behaviour): {', '.join(on)}\n" if on else ""


def serve_until_interrupted(
    *,
    port: int,
    patients: int,
    appointments: int | None,
    seed: int,
    api_key: str,
    rate_limit: int | None,
    rate_window: float,
    latency_ms: float,
    announce: Callable[[str], None],
    quirks: Quirks | None = None,
) -> None:
    """Generate a clinic and serve it on 127.0.0.1:port until Ctrl-C or SIGTERM (KeyboardInterrupt)."""
    from cliniko_sync.emulator.dataset import active_patient_ids, generate_clinic
    from cliniko_sync.errors import UnavailableError
    from cliniko_sync.output import iso_utc

    clinic = generate_clinic(patients=patients, appointments=appointments, seed=seed)
    server = EmulatorServer(
        clinic,
        api_keys=[api_key],
        port=port,
        rate_limit=rate_limit,
        rate_window=rate_window,
        latency_ms=latency_ms,
        quirks=quirks,
    )
    try:
        server.start()
    except OSError as exc:
        raise UnavailableError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    try:  # Ctrl-C from here on, even during the banner, stops the server the same way
        total = len(clinic.individual_appointments.records) + len(clinic.attendees.records)
        # The clinic's records are laid out around its clock, some exactly on the window's edges; a sync computes as
        # of its own start, so the count is only comparable at the same moment: name it, and how a sync asks for it.
        clock = iso_utc(clinic.now)
        active = len(active_patient_ids(clinic, clinic.now))
        announce(
            f"Cliniko emulator: {len(clinic.patients.records):,} synthetic patients, {total:,} appointments, "
            f"seed {seed}\n"
            f"Clinic clock: {clock}; {active} patients active in the 45 days up to it "
            f"(`cliniko-sync sync ORG --as-of {clock}` computes the same)\n"
            f"API: {server.base_url}   key: {api_key}   rate limit: "
            f"{f'{rate_limit} requests per {rate_window:g} s' if rate_limit else 'off'}\n"
            f"{_describe(server.quirks)}"
            f"Point cliniko-sync at it:\n"
            f"  echo {api_key} | cliniko-sync credentials set ORG --api-url {server.base_url}\n"
            f"Press Ctrl-C to stop."
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        announce("Cliniko emulator: stopped")
    finally:
        server.stop()
