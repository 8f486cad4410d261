"""The benchmark harness, end to end at tiny sizes: it runs, reports, and nothing overbooks.

Never a speed threshold: this machine is shared and small. The numbers belong to `make bench`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_ROWS = {"B1/pgbench", "B2/livez", "S1", "S2", "S3", "S4", "S5", "S7"}


TARGETS = {
    "S1_vs_pgbench",
    "S1_p99_ms",
    "S2_vs_livez",
    "S5_growth",
    "S6_pgbouncer_vs_direct",
    "S7_vs_S1",
}


def run_smoke(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float, str]:
    """``python -m bench run --smoke`` with ``args``; the run, its seconds and its output."""
    # A database of its own beside the test database: the harness drops and recreates it.
    url = make_url(TEST_DATABASE_URL)
    bench_url = url.set(database=f"{url.database}_bench_smoke")
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": bench_url.render_as_string(hide_password=False),
        "BENCH_REDIS_URL": TEST_REDIS_URL,
    }
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--smoke", "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = f"stdout:\n{completed.stdout[-6000:]}\nstderr:\n{completed.stderr[-6000:]}"
    return completed, elapsed, output


@pytest.mark.slow
def test_smoke_run_reports_every_scenario_and_no_violation(tmp_path: Path) -> None:
    completed, elapsed, output = run_smoke(tmp_path)
    assert completed.returncode == 0, output

    [report] = tmp_path.glob("*.json")
    result = json.loads(report.read_text())
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == EXPECTED_ROWS, output
    assert result["invariant_violations"] == 0, output
    assert result["failed"] == [], output
    for key, row in rows.items():
        assert row["value"], f"{key} measured nothing\n{output}"
    # The sell-out really sold out.
    capacity = result["sizes"]["sellout_capacity"]
    assert rows["S1"]["details"]["event"]["booked_count"] == capacity, output
    assert rows["S2"]["details"]["load"]["codes"].get("409 event_full"), output
    # Every target is listed; S6's is n/a, since it runs only when asked for.
    assert {target["id"] for target in result["targets"]} == TARGETS
    assert "S5" in completed.stdout and "Invariant violations: 0" in completed.stdout
    if importlib.util.find_spec("matplotlib") is not None:
        assert result["chart"] and Path(result["chart"]).stat().st_size > 10_000
    print(f"bench smoke run took {elapsed:.0f} s")


@pytest.mark.slow
def test_smoke_run_of_the_scale_out_scenario(tmp_path: Path) -> None:
    completed, elapsed, output = run_smoke(tmp_path, "--scenarios", "S6")
    assert completed.returncode == 0, output

    [report] = tmp_path.glob("*.json")
    result = json.loads(report.read_text())
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == {"S6/direct", "S6/pgbouncer"}, output
    assert result["invariant_violations"] == 0 and result["failed"] == [], output
    capacity = result["sizes"]["sellout_capacity"]
    for row in rows.values():
        details = row["details"]
        assert row["value"], output
        assert details["event"]["booked_count"] == capacity, output
        assert details["server_errors_5xx"] == 0, output
        assert details["postgres_sessions_peak"], output
    pooled = rows["S6/pgbouncer"]["details"]
    assert pooled["instances"] == result["sizes"]["scaleout_instances"], output
    # Through the pooler PostgreSQL never saw more sessions than its pool.
    assert pooled["postgres_sessions_peak"] <= pooled["pgbouncer"]["server_pool"], output
    assert pooled["pgbouncer"]["peak_client_connections"] > 0, output
    assert rows["S6/pgbouncer"]["ratio_to"] == "S6/direct", output
    [target] = [t for t in result["targets"] if t["id"] == "S6_pgbouncer_vs_direct"]
    assert target["value"] is not None, output
    assert "S6 scale-out" in completed.stdout and "via PgBouncer ÷" in completed.stdout, output
    print(f"bench smoke run of S6 took {elapsed:.0f} s")
