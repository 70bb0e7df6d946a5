"""Kept-alive connections (`reconcile.channels.keepalive`) against a real local HTTP/1.1 server."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reconcile.channels.keepalive import Origin, _proxy_for


@dataclass
class Seen:
    """What the server saw: each request's line and the client port it came from."""

    requests: list[tuple[str, int, str, bytes]] = field(default_factory=list)
    close_after_answer: bool = False  # drop the connection while announcing keep-alive
    drop_second: bool = False  # close a connection at its second request, unanswered
    hold: threading.Event | None = None  # answer only when set
    closed: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))


def _server(seen: Seen) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        answered = 0

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen.requests.append((self.command, self.client_address[1], self.path, body))
            if seen.drop_second and self.answered == 1:
                self.close_connection = True  # read, never answered: the race, made certain
                return
            self.answered += 1
            if seen.hold is not None:
                seen.hold.wait(5)
            reply = json.dumps({"path": self.path}).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting (the timeout test)
                return
            if seen.close_after_answer:
                self.close_connection = True  # as a server's idle timeout would, unannounced

        do_GET = do_PUT = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def shutdown_request(self, request: Any) -> None:
            super().shutdown_request(request)
            seen.closed.release()  # the socket is closed now, not just the handler finished

    return Server(("127.0.0.1", 0), Handler)


@contextmanager
def running(seen: Seen, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """The test server, started; its base URL."""
    server = _server(seen)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        if seen.hold is not None:
            seen.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def served() -> Iterator[tuple[Seen, str]]:
    seen = Seen()
    with running(seen) as url:
        yield seen, url


def origin(url: str, **options: Any) -> Origin:
    return Origin(url, connect_timeout=5.0, read_timeout=options.pop("read_timeout", 5.0),
                  **options)


def test_requests_reuse_one_connection(served: tuple[Seen, str]) -> None:
    seen, url = served
    pool = origin(url)
    try:
        first = pool.request("GET", "/a?x=1", {"Accept": "application/json"})
        second = pool.request("PUT", "/b", {"Content-Type": "application/json"}, b'{"k":1}')
    finally:
        pool.close()
    assert (first.status, json.loads(first.body)) == (200, {"path": "/a?x=1"})
    assert second.headers["Content-Type"] == "application/json"
    [(_, port_a, _, _), (method, port_b, path, body)] = seen.requests
    assert port_a == port_b
    assert (method, path, body) == ("PUT", "/b", b'{"k":1}')


def test_a_connection_the_server_closed_while_idle_is_replaced(
    served: tuple[Seen, str],
) -> None:
    """Never a request into a dead socket: the next call goes out on a new connection."""
    seen, url = served
    seen.close_after_answer = True
    pool = origin(url)
    try:
        for _ in range(3):
            # POST is never sent twice: only the check before reuse can save it.
            assert pool.request("POST", "/again", {}, b"{}").status == 200
            assert seen.closed.acquire(timeout=5)  # the server has closed it by now
    finally:
        pool.close()
    ports = [port for _, port, _, _ in seen.requests]
    assert len(ports) == 3
    assert len(set(ports)) == 3


def test_an_idempotent_request_that_meets_a_closing_connection_is_sent_again(
    served: tuple[Seen, str],
) -> None:
    """The server closes the reused connection on reading the request (its idle timeout
    racing the reuse): a GET goes out once more on a new connection, a POST fails."""
    seen, url = served
    seen.drop_second = True
    pool = origin(url)
    try:
        assert pool.request("GET", "/first", {}).status == 200
        assert pool.request("GET", "/second", {}).status == 200
        assert [path for _, _, path, _ in seen.requests] == ["/first", "/second", "/second"]
        with pytest.raises(http.client.RemoteDisconnected):
            pool.request("POST", "/third", {}, b"{}")
    finally:
        pool.close()
    assert [path for _, _, path, _ in seen.requests][3:] == ["/third"]


def test_concurrent_callers_get_their_own_connections(served: tuple[Seen, str]) -> None:
    """Two exchanges in flight at once use two connections; both come back for reuse."""
    seen, url = served
    seen.hold = threading.Event()
    pool = origin(url)
    answers: list[int] = []
    callers = [threading.Thread(target=lambda: answers.append(
        pool.request("GET", "/slow", {}).status)) for _ in range(2)]
    try:
        for caller in callers:
            caller.start()
        while len(seen.requests) < 2:
            threading.Event().wait(0.01)
        seen.hold.set()
        for caller in callers:
            caller.join(5)
        assert answers == [200, 200]
        assert len(pool._idle) == 2
        assert pool.request("GET", "/after", {}).status == 200
    finally:
        pool.close()
    assert len({port for _, port, _, _ in seen.requests}) == 2
    assert pool._idle == []


def test_a_silent_server_times_out_and_its_connection_is_dropped(
    served: tuple[Seen, str],
) -> None:
    seen, url = served
    seen.hold = threading.Event()
    pool = origin(url, read_timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            pool.request("GET", "/never", {})
        assert pool._idle == []
    finally:
        pool.close()


def test_a_refused_connection_raises_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = origin(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectionRefusedError):
        pool.request("GET", "/", {})


def test_a_plain_proxy_gets_the_full_url(
    served: tuple[Seen, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With http_proxy set, the request goes to the proxy with the absolute URL."""
    seen, proxy_url = served
    monkeypatch.setenv("http_proxy", proxy_url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    pool = origin("http://store.example:8080")
    try:
        assert pool.request("GET", "/inApps/v1/x?y=1", {}).status == 200
    finally:
        pool.close()
    [(_, _, path, _)] = seen.requests
    assert path == "http://store.example:8080/inApps/v1/x?y=1"


def test_proxy_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://us%40er:p%3Ass@proxy.internal:3128")
    monkeypatch.setenv("no_proxy", "api.internal")
    proxy = _proxy_for("https", "api.storekit.itunes.apple.com")
    assert proxy is not None
    assert proxy.address == ("proxy.internal", 3128)
    # "us@er:p:ss" in base64: the credentials are unquoted before they are encoded.
    assert proxy.headers == {"Proxy-Authorization": "Basic dXNAZXI6cDpzcw=="}
    assert _proxy_for("https", "api.internal") is None
    monkeypatch.setenv("https_proxy", "socks5://proxy.internal:1080")
    with pytest.raises(ValueError, match="http:// proxy URL"):
        _proxy_for("https", "api.storekit.itunes.apple.com")


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="not an http"):
        origin("ftp://store.example")


def _self_signed(directory: Path) -> Path:
    """A certificate (and its key, in the same PEM file) for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "server.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return path


def test_https_verifies_the_server_and_keeps_the_connection(tmp_path: Path) -> None:
    """TLS against certifi's roots by default (a self-signed server is refused); with a
    context that trusts it, two requests share one TLS connection."""
    pem = _self_signed(tmp_path)
    seen = Seen()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pem)
    with running(seen, tls) as url:
        with pytest.raises(ssl.SSLCertVerificationError):
            origin(url).request("GET", "/", {})
        assert seen.requests == []
        trusting = origin(url, context=ssl.create_default_context(cafile=str(pem)))
        try:
            for _ in range(2):
                assert trusting.request("GET", "/tls", {}).status == 200
        finally:
            trusting.close()
    assert len({port for _, port, _, _ in seen.requests}) == 1
