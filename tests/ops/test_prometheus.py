"""The deploy/ Prometheus pieces against the real thing: promtool, and a Prometheus server
scraping a running instance with the deploy config (only addresses and intervals swapped)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from harness.instances import AppInstance
from harness.processes import PROJECT_ROOT, free_port, wait_until
from tests import factories
from tests.factories import API, auth
from tests.support.instances import instance_env

pytestmark = pytest.mark.slow

DEPLOY = PROJECT_ROOT / "deploy"
TOKEN = "prometheus-test-token"
JOB = "booking-service"
UNAUTHENTICATED_JOB = "booking-service-without-token"
ALERT_NAMES = re.findall(r"^\s*- alert: (\w+)$", (DEPLOY / "alerts.yml").read_text(), re.M)
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "booking-service.json"
# The built-in /ops page's panels, which the Grafana dashboard must also have.
DASHBOARD_PANELS = {
    "Lock wait p50 / p95 / p99",
    "Lock hold time p50 / p95 / p99",
    "Lock acquisitions per second",
    "Lock timeouts and lost leases",
    "Bookings by result",
    "Hottest events",
    "Capacity utilisation of upcoming events",
}
# Grafana's variables, as a dashboard query would see them with "All" instances.
GRAFANA_VARIABLES = {"$instance": ".*", "$__rate_interval": "1m", "$__range": "5m"}


def binary(name: str) -> str:
    """Path of a Prometheus tool; its absence is a failure, not a reason to skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; these tests need Debian's prometheus package "
            "(apt-get install prometheus; scripts/test.sh installs it)"
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def deploy_config(directory: Path, *, target: str, listen: str) -> Path:
    """deploy/prometheus.yml with test addresses and 1 s intervals, alerts.yml beside it."""
    token_file = directory / "metrics_token"
    token_file.write_text(TOKEN)
    config = (DEPLOY / "prometheus.yml").read_text()
    for old, new in {
        "credentials_file: /run/secrets/metrics_token": f"credentials_file: {token_file}",
        '["app1:8000", "app2:8000", "app3:8000"]': json.dumps([target]),
        '"localhost:9090"': json.dumps(listen),
        "scrape_interval: 15s": "scrape_interval: 1s",
        "evaluation_interval: 15s": "evaluation_interval: 1s",
    }.items():
        assert config.count(old) == 1, f"deploy/prometheus.yml no longer contains {old!r}"
        config = config.replace(old, new)
    # The same instance once more without the token: that scrape must be refused.
    config += (
        f"\n  - job_name: {UNAUTHENTICATED_JOB}\n"
        f"    static_configs:\n"
        f"      - targets: [{json.dumps(target)}]\n"
    )
    path = directory / "prometheus.yml"
    path.write_text(config)
    shutil.copy(DEPLOY / "alerts.yml", directory / "alerts.yml")
    return path


class PrometheusServer:
    """A real Prometheus on a free loopback port, with its own TSDB directory."""

    def __init__(self, config: Path, storage: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = storage.parent / "prometheus.log"
        self.args = [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=30, what="prometheus to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited; log:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> dict[str, float]:
        """Instant query: each series' ``instance/job`` -> value."""
        result = self.api("query", query=promql)["result"]
        return {
            f"{series['metric'].get('instance')}/{series['metric'].get('job')}": float(
                series["value"][1]
            )
            for series in result
        }


def test_alert_rules_pass_promtool_check() -> None:
    result = run(binary("promtool"), "check", "rules", str(DEPLOY / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in result.stdout


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = run(binary("promtool"), "test", "rules", str(DEPLOY / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert has at least one fixture that makes it fire.
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "alerts.test.yml").read_text()))
    assert tested == set(ALERT_NAMES)


def test_deploy_prometheus_config_is_valid(tmp_path: Path) -> None:
    # The full check (rule files, token file) needs the secret to exist: give it one.
    config = deploy_config(tmp_path, target="app1:8000", listen="localhost:9090")
    result = run(binary("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    syntax = run(binary("promtool"), "check", "config", "--syntax-only", "deploy/prometheus.yml")
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


def dashboard_queries() -> dict[str, str]:
    """Each panel query of the dashboard, Grafana's variables filled in, by panel title."""
    queries = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for number, target in enumerate(panel["targets"]):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} #{number}"] = expr
    return queries


def test_dashboard_has_the_built_in_page_panels_on_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert titles >= DASHBOARD_PANELS, DASHBOARD_PANELS - titles
    datasource = (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    uid = re.search(r"^\s*uid: (\S+)$", datasource, re.M)
    assert uid is not None
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid.group(1), panel["title"]
        assert all(target["datasource"]["uid"] == uid.group(1) for target in panel["targets"])
    provider = (DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    assert "path: /etc/grafana/dashboards" in provider
    compose = (PROJECT_ROOT / "docker-compose.yml").read_text()
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in compose


@pytest.fixture
def secured_instance(app: Flask) -> Iterator[AppInstance]:
    env = instance_env(METRICS_TOKEN=TOKEN)
    with AppInstance(env, workers=2, name="prometheus-target") as started:
        yield started


def test_prometheus_scrapes_a_running_instance_with_the_token(
    secured_instance: AppInstance, client: FlaskClient, tmp_path: Path
) -> None:
    # Three bookings fill an event of three seats: bookings_total{created} is 3, and the
    # event is at 100% of capacity, which the capacity alert must notice.
    organizer = factories.organizer(client)
    event_id = factories.create_event(client, organizer["token"], capacity=3)["id"]
    for _ in range(3):
        response = requests.post(
            f"{secured_instance.base_url}{API}/bookings",
            json={"event_id": event_id},
            headers=auth(factories.customer(client)["token"]),
            timeout=30,
        )
        assert response.status_code == 201, response.text

    target = f"127.0.0.1:{secured_instance.port}"
    port = free_port()
    config = deploy_config(tmp_path, target=target, listen=f"127.0.0.1:{port}")
    with PrometheusServer(config, tmp_path / "tsdb", port) as prometheus:

        def scraped() -> bool:
            ups = prometheus.query("up")
            return f"{target}/{JOB}" in ups and f"{target}/{UNAUTHENTICATED_JOB}" in ups

        wait_until(scraped, timeout=30, what="both scrape jobs to have run")
        assert prometheus.query(f'up{{job="{JOB}"}}') == {f"{target}/{JOB}": 1.0}
        assert prometheus.query(f'up{{job="{UNAUTHENTICATED_JOB}"}}') == {
            f"{target}/{UNAUTHENTICATED_JOB}": 0.0
        }
        refused = [
            t
            for t in prometheus.api("targets")["activeTargets"]
            if t["labels"]["job"] == UNAUTHENTICATED_JOB
        ]
        assert refused and "401" in refused[0]["lastError"], refused

        created = prometheus.query(f'bookings_total{{job="{JOB}",result="created"}}')
        assert created == {f"{target}/{JOB}": 3.0}, prometheus.log()
        assert prometheus.query(f'booking_ready{{job="{JOB}"}}') == {f"{target}/{JOB}": 1.0}

        def rules() -> dict[str, dict[str, Any]]:
            groups = prometheus.api("rules")["groups"]
            return {rule["name"]: rule for group in groups for rule in group["rules"]}

        assert sorted(rules()) == sorted(ALERT_NAMES)
        # Full event: the capacity alert is on its way (pending until its "for" has passed).
        wait_until(
            lambda: rules()["BookingEventNearCapacity"]["state"] in ("pending", "firing"),
            timeout=30,
            what="BookingEventNearCapacity to notice the full event",
        )
        by_name = rules()
        assert all(rule["health"] == "ok" for rule in by_name.values()), by_name
        assert by_name["BookingInstanceNotReady"]["state"] == "inactive"
        assert by_name["BookingLockLost"]["state"] == "inactive"

        # Every dashboard query is valid PromQL on this data; these must show the bookings.
        answers = {title: prometheus.query(expr) for title, expr in dashboard_queries().items()}
        assert answers["Ready instances #0"] == {"None/None": 1.0}
        assert answers["Fullest upcoming event #0"] == {"None/None": 1.0}
        assert answers["Hottest events #0"] == {"None/None": 3.0}
