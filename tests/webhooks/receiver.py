"""A real webhook receiver for the tests: a threaded HTTP server on a loopback port that
verifies every message with the ``standardwebhooks`` package, as a receiver would."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    """One POST as it arrived: headers, raw body, and whether its signature verified."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    arrived: float
    began: float = 0.0

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """Answers ``status`` (after ``delay`` seconds) to every POST and keeps what it got.

    ``stop()`` closes the port (a real outage: connections are refused); ``start()`` opens the
    same port again.
    """

    secret: str | None = None
    status: int = 204
    delay: float = 0.0
    headers_out: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    # While set, every POST waits for it to be cleared (a receiver that is slow on purpose).
    hold: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server API
                began = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {key.lower(): value for key, value in self.headers.items()}
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    while receiver.hold.is_set():
                        time.sleep(0.01)
                    if receiver.delay:
                        time.sleep(receiver.delay)
                    verified = receiver.verify(body, headers)
                    with receiver._lock:
                        receiver.received.append(
                            Received(headers, body, verified, time.monotonic(), began)
                        )
                    self.send_response(receiver.status)
                    for name, value in receiver.headers_out.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        if self.secret is None:
            return False
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    def ids(self) -> list[str]:
        with self._lock:
            return [item.webhook_id for item in self.received]

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item.payload for item in self.received]

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.hold.clear()
        self.stop()
