"""A clinic behind an outbound HTTP proxy: the client uses the one the environment names (HTTP_PROXY / HTTPS_PROXY,
NO_PROXY), read once when the client is made rather than on every request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cliniko_sync.cliniko.client import ClinikoClient
from cliniko_sync.errors import ClinikoSyncError

KEY = "MxJrZXkiOiI1Njd1amJmZTQ1NyJ9-au2"
EMAIL = "ops@clinic.example"
API_URL = "http://localhost:9/v1"  # nothing listens on port 9: only a proxy can answer


class _Proxy(BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(self.path)
        body = json.dumps({"patients": [{"id": "1"}], "total_entries": 1, "links": {"self": self.path}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Proxy", (_Proxy,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_the_environments_proxy_carries_every_request(
    proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", address)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with ClinikoClient(KEY, contact_email=EMAIL, api_url=API_URL, rate_limit=None, max_attempts=1) as client:
        for _ in range(2):
            assert [record["id"] for record in client.list_page("patients").records] == ["1"]
    # A proxy is sent the whole URL.
    assert len(seen) == 2 and all(path.startswith(f"{API_URL}/patients?") for path in seen), seen


def test_no_proxy_sends_the_requests_directly(proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    address, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", address)
    monkeypatch.setenv("NO_PROXY", "localhost")
    with ClinikoClient(KEY, contact_email=EMAIL, api_url=API_URL, rate_limit=None, max_attempts=1) as client:
        client.sleep = lambda seconds: None
        with pytest.raises(ClinikoSyncError):
            client.list_page("patients")
    assert seen == []
