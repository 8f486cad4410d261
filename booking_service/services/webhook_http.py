"""The only way out to a webhook receiver: which URLs and addresses may be sent to, and one
signed POST to an address resolved once.

A receiver's URL is an organizer's input, and the relay runs inside the service's network:
without rules it would post to the metadata service or to an internal admin port (SSRF). So:
https only (http when WEBHOOK_ALLOW_HTTP), and every address the host resolves to must be
public (``ipaddress``'s ``is_global``: no loopback, private, link-local, shared or reserved
range, so no cloud metadata address either), unless WEBHOOK_ALLOW_PRIVATE_TARGETS. The check
runs at registration and again before every delivery, on the addresses the delivery then
connects to: a name that resolved to a public address at registration and to a private one
later (DNS rebinding) is refused then. No redirect is followed (http.client follows none): a
3xx is a failed attempt like any other error.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from booking_service.errors import WebhookTargetRefused

# Kept from an answer: the first 1 KB (the deliveries log shows it).
ANSWER_BYTES = 1024
USER_AGENT = "booking-service-webhooks/1"
# Named as well as covered by is_global: the cloud metadata services.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


class WebhookHttpSettings:
    """WEBHOOK_ALLOW_HTTP, WEBHOOK_ALLOW_PRIVATE_TARGETS, WEBHOOK_TIMEOUT_SECONDS."""

    allow_http = False
    allow_private = False
    timeout = 5.0


settings = WebhookHttpSettings()


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: SplitResult
    host: str
    port: int
    address: str
    family: int
    sockaddr: tuple[Any, ...]


@dataclass(frozen=True)
class Answer:
    """What one attempt came to: ``result`` is success, gone (410), http_error, timeout,
    connection_error or refused_target."""

    result: str
    status_code: int | None
    latency_ms: int
    body: str | None = None
    error: str | None = None


def check_url(url: str) -> SplitResult:
    """The URL split, if its form is allowed (the addresses are ``resolve``'s)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookTargetRefused("The URL is not valid.") from None
    allowed = ("https", "http") if settings.allow_http else ("https",)
    if parts.scheme not in allowed:
        raise WebhookTargetRefused(f"The URL must use {' or '.join(allowed)}.")
    if not parts.hostname:
        raise WebhookTargetRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        # It would be shown in every listing; the signature authenticates the sender.
        raise WebhookTargetRefused("The URL must not carry credentials.")
    if port == 0:
        raise WebhookTargetRefused("The URL's port is not valid.")
    return parts


def resolve(url: str) -> Target:
    """Check ``url`` and resolve its host: the address to connect to, if every address the
    host has is allowed."""
    parts = check_url(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookTargetRefused(f"The host {host!r} does not resolve.") from None
    if not settings.allow_private:
        for info in infos:
            address = str(info[4][0])
            if not _public(ipaddress.ip_address(address.split("%")[0])):
                raise WebhookTargetRefused(
                    f"The host {host!r} resolves to {address}, which is not a public address."
                )
    family, _, _, _, sockaddr = infos[0]
    return Target(
        url=parts,
        host=host,
        port=port,
        address=str(sockaddr[0]),
        family=family,
        sockaddr=tuple(sockaddr),
    )


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and address not in METADATA_ADDRESSES and not address.is_multicast


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` to ``url`` once, through ``resolve``'s address, within the timeout."""
    started = time.perf_counter()

    def answer(result: str, **fields: object) -> Answer:
        latency = int((time.perf_counter() - started) * 1000)
        return Answer(result=result, latency_ms=latency, **fields)  # type: ignore[arg-type]

    try:
        target = resolve(url)
    except WebhookTargetRefused as refused:
        return answer("refused_target", status_code=None, error=refused.detail)
    connection = _connection(target)
    # A receiver that trickles its answer would hold the relay: the whole exchange, not each
    # read, is bounded by the timeout.
    cut = threading.Event()
    watchdog = threading.Timer(settings.timeout, _cut, args=(connection, cut))
    watchdog.start()
    try:
        path = target.url.path or "/"
        if target.url.query:
            path += f"?{target.url.query}"
        connection.request(
            "POST",
            path,
            body=body,
            headers={
                **headers,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Connection": "close",
            },
        )
        response = connection.getresponse()
        text = response.read(ANSWER_BYTES).decode("utf-8", errors="replace")
        status = response.status
    except TimeoutError:
        return answer("timeout", status_code=None, error="no answer within the timeout")
    except (OSError, http.client.HTTPException) as error:
        if cut.is_set():
            return answer("timeout", status_code=None, error="no answer within the timeout")
        return answer("connection_error", status_code=None, error=type(error).__name__)
    finally:
        watchdog.cancel()
        connection.close()
    if 200 <= status < 300:
        return answer("success", status_code=status, body=text)
    return answer("gone" if status == 410 else "http_error", status_code=status, body=text)


def _connection(target: Target) -> http.client.HTTPConnection:
    if target.url.scheme == "https":
        return _PinnedHTTPSConnection(target, timeout=settings.timeout)
    return _PinnedHTTPConnection(target, timeout=settings.timeout)


def _cut(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    cut.set()
    sock = connection.sock
    if sock is not None:
        with suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _connect(target: Target, timeout: float | None) -> socket.socket:
    """A socket connected to the checked address itself: no second name lookup."""
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(target.sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address; the Host header still names the URL's host."""

    def __init__(self, target: Target, *, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._target = target

    def connect(self) -> None:
        self.sock = _connect(self._target, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """``_PinnedHTTPConnection`` over TLS, verified against the URL's host name."""

    def __init__(self, target: Target, *, timeout: float) -> None:
        super().__init__(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
        self._target = target

    def connect(self) -> None:
        sock = _connect(self._target, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
