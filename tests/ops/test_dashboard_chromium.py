"""The ops dashboard in a real headless Chromium against a real gunicorn instance under load.

Booking load from several client processes (one hot event, one quiet one) goes first; then
Chromium loads ``/ops#token=...`` with a virtual-time budget (the page polls a few times), its
DOM is checked against that load, and a screenshot is kept in test-artifacts/.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from harness.instances import AppInstance
from harness.load import RequestSpec, fire
from harness.processes import PROJECT_ROOT
from tests.support.instances import instance_env

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "ops-dashboard.png"
OPS_TOKEN = "dashboard-test-ops-token-7f3a9c"
API = "/api/v1"
PASSWORD = "correct-horse-battery"

HOT_TITLE = "Hot: Stadium Reunion Tour"
QUIET_TITLE = "Quiet: Poetry Evening"
HOT_CAPACITY = 30
HOT_CLIENTS = 8  # processes
HOT_PER_CLIENT = 5  # 40 attempts for 30 seats
QUIET_BOOKINGS = 3

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    # Virtual time runs the page's 2 s poll timer several times; fetches pause the clock.
    "--virtual-time-budget=12000",
    "--run-all-compositor-stages-before-draw",
]


# --- a tiny DOM from Chromium's --dump-dom output ---------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(
                    child.attrs.get(name.replace("_", "-")) == value
                    for name, value in attrs.items()
                ):
                    found.append(child)
                found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'} {attrs}> in the page"
        return found[0]


class DomBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse(html: str) -> Node:
    builder = DomBuilder()
    builder.feed(html)
    return builder.root


# --- helpers ----------------------------------------------------------------------------


def require_chromium() -> None:
    # A missing browser is a broken test environment, not a reason to skip the check.
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium) "
        "to run the dashboard test"
    )


def chromium(url: str, *extra: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="ops-chromium-") as profile:
        return subprocess.run(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def register(base: str, role: str, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "username": f"dash-{role}-{n}",
        "password": PASSWORD,
        "email": f"dash-{role}-{n}@example.com",
    }
    if role == "organizer":
        body["organization_name"] = "Dashboard Test Org"
    response = requests.post(f"{base}{API}/auth/register/{role}", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def create_event(base: str, token: str, title: str, capacity: int) -> int:
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(days=2)
    response = requests.post(
        f"{base}{API}/events",
        json={
            "title": title,
            "description": "dashboard test",
            "start_time": start.isoformat(),
            "end_time": (start + timedelta(hours=3)).isoformat(),
            "capacity": capacity,
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def booking(base: str, token: str, event_id: int, tag: str) -> RequestSpec:
    return RequestSpec(
        "POST",
        f"{base}{API}/bookings",
        headers={"Authorization": f"Bearer {token}"},
        json={"event_id": event_id},
        tag=tag,
    )


def generate_load(base: str) -> tuple[int, int, Counter[str]]:
    """Book one hot event from several processes and a quiet one; return ids and results."""
    organizer = register(base, "organizer", 0)
    hot = create_event(base, organizer["token"], HOT_TITLE, HOT_CAPACITY)
    quiet = create_event(base, organizer["token"], QUIET_TITLE, 10)
    with ThreadPoolExecutor(max_workers=8) as pool:
        customers = list(
            pool.map(
                lambda n: register(base, "customer", n)["token"],
                range(HOT_CLIENTS * HOT_PER_CLIENT + QUIET_BOOKINGS),
            )
        )
    hot_tokens = customers[: HOT_CLIENTS * HOT_PER_CLIENT]
    specs: list[list[RequestSpec]] = [
        [booking(base, token, hot, "hot") for token in hot_tokens[i::HOT_CLIENTS]]
        for i in range(HOT_CLIENTS)
    ]
    specs.append([booking(base, t, quiet, "quiet") for t in customers[len(hot_tokens) :]])
    result = fire(specs)
    results: Counter[str] = Counter()
    for outcome in result.outcomes:
        results["created" if outcome.status == 201 else outcome.code or str(outcome.status)] += 1
    assert results["created"] == HOT_CAPACITY + QUIET_BOOKINGS, result.summary()
    return hot, quiet, results


# --- the test ---------------------------------------------------------------------------


def test_dashboard_shows_booking_load_in_chromium(app: Flask) -> None:
    require_chromium()
    env = instance_env(OPS_TOKEN=OPS_TOKEN, LOCK_WAIT_SECONDS=5)
    with AppInstance(env, workers=2, threads=8, name="ops-dashboard") as instance:
        base = instance.base_url
        hot, quiet, results = generate_load(base)
        assert requests.get(f"{base}{API}/ops/locks", timeout=5).status_code == 401
        url = f"{base}/ops#token={OPS_TOKEN}"

        dumped = chromium(url, "--dump-dom")
        assert dumped.returncode == 0, dumped.stderr[-3000:]
        dom = parse(dumped.stdout)

        refused = chromium(f"{base}/ops#token=not-the-ops-token", "--dump-dom")
        assert refused.returncode == 0, refused.stderr[-3000:]
        refused_dom = parse(refused.stdout)

        ARTIFACTS.mkdir(exist_ok=True)
        SCREENSHOT.unlink(missing_ok=True)
        shot = chromium(url, f"--screenshot={SCREENSHOT}", "--window-size=1400,1000")
        assert shot.returncode == 0, shot.stderr[-3000:]

    status = dom.find(id="status")
    assert status.attrs["data-state"] == "ok", status.text()
    assert dom.find(id="token-panel").attrs.get("hidden") is not None  # the token was taken

    # Hot-event table: the hot event first, with the load's acquisitions; the quiet one next.
    rows = dom.find(id="hot-events").find("tbody").find_all("tr")
    assert [row.attrs["data-event-id"] for row in rows] == [str(hot), str(quiet)]
    assert HOT_TITLE in rows[0].text() and QUIET_TITLE in rows[1].text()
    # Every hot attempt that got past the sold-out pre-check was served under the lock, alone
    # or in a batch sharing one acquisition.
    hot_acquired, hot_requests = (int(rows[0].attrs[f"data-{n}"]) for n in ("acquired", "requests"))
    assert 1 <= hot_acquired <= hot_requests
    assert HOT_CAPACITY <= hot_requests <= HOT_CLIENTS * HOT_PER_CLIENT
    assert int(rows[1].attrs["data-requests"]) == QUIET_BOOKINGS
    assert rows[0].attrs["data-waiters"] == "0"

    # Charts plotted points; the bookings-by-result bars carry exactly the load's results.
    for chart in ("lock-wait", "lock-hold", "acquisitions"):
        assert int(dom.find(data_chart=chart).attrs["data-points"]) > 0, chart
    bars = {
        bar.attrs["data-result"]: int(bar.attrs["data-value"])
        for bar in dom.find(id="booking-bars").find_all("div")
        if "data-result" in bar.attrs
    }
    assert bars["created"] == results["created"] == HOT_CAPACITY + QUIET_BOOKINGS
    assert (
        bars["event_full"] == results["event_full"] == HOT_CLIENTS * HOT_PER_CLIENT - HOT_CAPACITY
    )
    assert sum(bars.values()) == sum(results.values())
    assert dom.find(data_tile="timeouts").find(id="tile-timeouts").text() == str(
        results.get("lock_timeout", 0)
    )

    # Capacity of upcoming events: the sold-out hot event leads at 100 %.
    upcoming = dom.find(id="upcoming").find("tbody").find_all("tr")
    assert upcoming[0].attrs["data-event-id"] == str(hot)
    assert float(upcoming[0].attrs["data-utilisation"]) == 1.0
    assert "100%" in upcoming[0].text()

    # A refused token brings the sign-in form back and shows no data.
    assert refused_dom.find(id="status").attrs["data-state"] == "auth"
    assert "hidden" not in refused_dom.find(id="token-panel").attrs
    assert "refused" in refused_dom.find(id="token-error").text()
    assert refused_dom.find(id="hot-events").attrs["data-rows"] == "0"

    assert SCREENSHOT.exists() and SCREENSHOT.stat().st_size > 20_000
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
