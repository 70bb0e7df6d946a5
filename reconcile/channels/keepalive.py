"""Kept-alive HTTP(S) connections over the standard library's `http.client`.

The App Store client sends one request per subscription a reconciliation checks, from many
threads that share one interpreter lock with the thread settling the answers. Over urllib3 a
request cost 450 us of CPU here, over `http.client` on the same kept-alive connection 245 us
(`python -m bench.http_client`, 2026-12-03): urllib3's pool, retry and timeout bookkeeping
around the very same `http.client` exchange. That difference is time the other threads wait
for the lock.

What urllib3 did for us is done here: connections are reused last-in first-out by any thread;
one the server closed while idle is replaced before use; connect and read have their own
timeouts; TLS verifies against certifi's roots; a proxy from the environment (`https_proxy` /
`http_proxy`, honouring `no_proxy`) is used, through CONNECT for https. One thing more: an
idempotent request that meets a reused connection closed under it (the server's idle timeout
racing the reuse) is sent once more on a new connection. Other failures propagate (`OSError`,
`http.client.HTTPException`): retrying is the caller's, so every attempt passes its rate limit.
"""

from __future__ import annotations

import base64
import http.client
import select
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

import certifi

MAX_IDLE = 32
# RFC 9110's idempotent methods: repeating one has the effect of sending it once.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class Answer:
    """A complete response: the body has been read and the connection given back."""

    status: int
    headers: Message
    body: bytes


class Origin:
    """Idle connections to one scheme://host:port, shared by every thread."""

    def __init__(
        self, url: str, *, connect_timeout: float, read_timeout: float,
        context: ssl.SSLContext | None = None, max_idle: int = MAX_IDLE,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._context = context or (
            ssl.create_default_context(cafile=certifi.where()) if self.scheme == "https" else None
        )
        self._proxy = _proxy_for(self.scheme, self.host)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Answer:
        """One exchange; `path` includes the query."""
        connection, reused = self._take()
        try:
            return self._exchange(connection, method, path, headers, body)
        except (ConnectionResetError, BrokenPipeError):  # also http.client.RemoteDisconnected
            # A kept-alive connection the server closed just as the request went out (its
            # idle timeout won the race with `_dropped`): nothing was answered, so a request
            # that may be repeated is sent once more on a new connection.
            if not reused or method not in IDEMPOTENT:
                raise
        return self._exchange(self._connect(), method, path, headers, body)

    def _exchange(
        self, connection: http.client.HTTPConnection, method: str, path: str,
        headers: Mapping[str, str], body: bytes | None,
    ) -> Answer:
        target = path
        if self._proxy is not None and self.scheme == "http":
            target = f"http://{self.host}:{self.port}{path}"  # a plain proxy takes the full URL
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            connection.close()
            raise
        if connection.sock is not None:  # http.client closes it when the server said close
            self._give(connection)
        return Answer(response.status, response.headers, data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        """A live idle connection (and True), or a new one (and False)."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect(), False
            if not _dropped(connection):
                return connection, True
            connection.close()

    def _give(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        host, port = (self.host, self.port) if self._proxy is None else self._proxy.address
        if self.scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=self.connect_timeout,
                                                     context=self._context)
            if self._proxy is not None:
                connection.set_tunnel(self.host, self.port, headers=self._proxy.headers)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(self.read_timeout)
        return connection


@dataclass(frozen=True)
class _Proxy:
    address: tuple[str, int]
    headers: dict[str, str]


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    """The environment's proxy for `scheme` unless `no_proxy` exempts `host`."""
    url = urllib.request.getproxies().get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{scheme}_proxy must be an http:// proxy URL, not {url!r}")
    headers = {}
    if parts.username is not None:
        credentials = (f"{urllib.parse.unquote(parts.username)}:"
                       f"{urllib.parse.unquote(parts.password or '')}")
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return _Proxy((parts.hostname, parts.port or 80), headers)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection the server has closed (or sent something unasked on):
    readable without a request is never a good sign."""
    sock = connection.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
