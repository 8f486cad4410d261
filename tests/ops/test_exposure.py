"""Who can reach an instance: loopback unless told otherwise, and nginx buffering in front.

gunicorn's threads are few (2 workers with 8 each by default); a client that trickles a body
holds one for as long as it likes. So an instance listens on loopback unless BIND says
otherwise, and whatever faces the outside is nginx, which reads each body whole (within a
timeout) before passing it on.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from harness.processes import PROJECT_ROOT, free_port, wait_until
from tests.support.instances import instance_env

pytestmark = pytest.mark.slow

DEFAULT_PORT = 8000
NGINX_CONF = PROJECT_ROOT / "deploy" / "nginx.conf"


def environment_without_bind() -> dict[str, str]:
    env = {**os.environ, **instance_env(WEB_CONCURRENCY=1, GUNICORN_THREADS=2)}
    env.pop("BIND", None)
    return env


def test_the_default_bind_address_is_loopback() -> None:
    # gunicorn executes its config file as Python; so does this, with BIND unset.
    result = subprocess.run(
        [sys.executable, "-c", "import runpy; print(runpy.run_path('gunicorn.conf.py')['bind'])"],
        cwd=PROJECT_ROOT,
        env=environment_without_bind(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"127.0.0.1:{DEFAULT_PORT}"


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _listening_addresses(pid: int) -> set[str]:
    """Local addresses (``hex_ip:hex_port``) of the listening TCP sockets the process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match.group(1))
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1])
    return found


def _other_local_address() -> str | None:
    """An address of this machine besides loopback, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.200", 9))  # TEST-NET-1: only a route lookup
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture
def instance_without_bind(app: Flask) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    # Only the port is chosen (PORT, free): the address is the default under test.
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=PROJECT_ROOT,
        env={**environment_without_bind(), "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _port_taken(port), timeout=30, what=f"gunicorn on :{port}")
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_an_instance_started_without_bind_listens_on_loopback_only(
    instance_without_bind: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = instance_without_bind
    # 0100007F:1F40 is 127.0.0.1:8000 as /proc/net/tcp writes it; 0.0.0.0 would be 00000000.
    assert _listening_addresses(process.pid) == {f"0100007F:{port:04X}"}
    live = requests.get(f"http://127.0.0.1:{port}/livez", timeout=10)
    assert live.status_code == 200
    other = _other_local_address()
    if other is not None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((other, port), timeout=5).close()


# --- nginx in front ------------------------------------------------------------------------


def _directives(text: str) -> dict[str, list[str]]:
    """Every ``name value;`` directive of an nginx config, comments dropped."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if match := re.fullmatch(r"(\w+)\s+(.+?);", line):
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def test_nginx_buffers_request_bodies_with_a_timeout() -> None:
    directives = _directives(NGINX_CONF.read_text())
    # Buffering is nginx's default; turning it off would hand slow bodies to the app.
    assert directives.get("proxy_request_buffering", ["on"]) == ["on"]
    [timeout] = directives["client_body_timeout"]
    assert re.fullmatch(r"\d+s", timeout) and int(timeout[:-1]) <= 30, timeout
    [header_timeout] = directives["client_header_timeout"]
    assert re.fullmatch(r"\d+s", header_timeout) and int(header_timeout[:-1]) <= 30


def test_nginx_takes_bodies_as_large_as_the_app_does(app: Flask) -> None:
    [size] = _directives(NGINX_CONF.read_text())["client_max_body_size"]
    assert re.fullmatch(r"\d+k", size), size
    assert int(size[:-1]) * 1024 == app.config["MAX_CONTENT_LENGTH"]
