"""The results table (text) and chart (PNG) of one run, both built from its JSON document."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _errors(errors: dict[str, int]) -> str:
    if not errors:
        return "0"
    return ", ".join(f"{code}: {n}" for code, n in sorted(errors.items()))


def _render(headers: list[str], lines: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in [headers, *lines]) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([fmt(headers), rule, *(fmt(row) for row in lines)])


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Baselines first, then scenarios in order (S6's sides as they ran)."""
    return sorted(rows, key=lambda row: row["scenario"])


def table(result: dict[str, Any]) -> str:
    """Measurements, targets, and where requests waited, as plain-text tables."""
    rows = ordered(result["rows"])
    lines = []
    for row in rows:
        ratio = "-"
        if row["ratio"] is not None:
            ratio = f"{row['ratio']:.3f}x {row['ratio_to']}"
        if row["scenario"] == "S3" and row["details"].get("vs_S1") is not None:
            ratio += f"; {row['details']['vs_S1']:.3f}x S1"
        lines.append(
            [
                row["key"],
                row["title"],
                row["metric"],
                _num(row["value"], 3 if row["scenario"] == "S5" else 1),
                _num(row["p50_ms"]),
                _num(row["p99_ms"]),
                ratio,
                _errors(row["errors"]),
                str(len(row["violations"])) + (" FAILED" if row["failed"] else ""),
            ]
        )
    out = [
        f"Benchmark ({result['mode']}, {result['seconds']:.0f} s, "
        f"{result['machine']['cpus']} CPUs, commit {result['machine']['commit']})",
        "",
        _render(
            [
                "row",
                "scenario",
                "metric",
                "value",
                "p50 ms",
                "p99 ms",
                "ratio",
                "errors (non-2xx by code)",
                "violations",
            ],
            lines,
            right={3, 4, 5},
        ),
        "",
        _render(
            ["target", "value", "goal (stretch)", "grade"],
            [[t["name"], _num(t["value"], 3), t["target"], t["grade"]] for t in result["targets"]],
            right={1},
        ),
    ]
    waits = [
        (row["key"], row["details"]["where_requests_wait"], row["details"].get("service_metrics"))
        for row in rows
        if row["details"].get("where_requests_wait")
    ]
    if waits:
        out += [
            "",
            "Where requests wait (sampled every 100 ms; busy = connection checked out):",
            _render(
                [
                    "row",
                    "DB conns busy mean/max",
                    "DB row-lock waiters mean/max",
                    "Redis BLPOP waiters mean/max",
                    "lock wait mean ms",
                    "lock hold mean ms",
                ],
                [
                    [
                        key,
                        f"{w.get('db_busy_mean', '-')}/{w.get('db_busy_max', '-')}",
                        f"{w.get('db_lock_waiting_mean', '-')}/{w.get('db_lock_waiting_max', '-')}",
                        f"{w.get('redis_blocked_mean', '-')}/{w.get('redis_blocked_max', '-')}",
                        str((m or {}).get("lock_wait_mean_ms", "-")),
                        str((m or {}).get("lock_hold_mean_ms", "-")),
                    ]
                    for key, w, m in waits
                ],
                right=set(),
            ),
        ]
    cpu = [
        (row["key"], row["details"]["worker_cpu_seconds"])
        for row in rows
        if row["details"].get("worker_cpu_seconds")
    ]
    if cpu:
        out += ["", "CPU seconds used by each gunicorn worker of the row's instances:"]
        out += [f"  {key:<10} {' '.join(f'{v:6.1f}' for v in values)}" for key, values in cpu]
    out += _scale_out(result, rows)
    s5 = next((row for row in rows if row["scenario"] == "S5" and not row["failed"]), None)
    if s5:
        d = s5["details"]
        out += [
            "",
            "S5 cost of one booking (ms per booking at "
            f"{result['sizes']['growth_clients']} clients; pgbench: 1 client, DB only):",
            _render(
                ["state", "rows", "ms/booking", "p50 ms", "p99 ms", "pgbench mean ms"],
                [
                    [
                        label,
                        f"{d[key]['rows_in_database']:,}",
                        _num(d[key]["ms_per_booking"], 3),
                        _num(d[key]["p50_ms"]),
                        _num(d[key]["p99_ms"]),
                        _num(d[key]["pgbench_1_client_mean_ms"], 3),
                    ]
                    for label, key in (
                        ("empty table, fresh event", "empty"),
                        ("full table, hot event", "hot"),
                        ("full table, fresh event", "fresh"),
                    )
                ],
                right={1, 2, 3, 4, 5},
            ),
        ]
    for mode, profile in (result.get("profile") or {}).items():
        if not profile.get("self"):
            out += ["", f"py-spy ({mode}): {profile.get('skipped', 'no samples')}"]
            continue
        what = "GIL holder: CPU in Python" if mode == "gil" else "non-idle threads: wall time"
        out += [
            "",
            f"py-spy, every worker during S1, {what} ({profile['samples']} samples; per worker "
            f"{sorted(profile['samples_per_worker'].values())}):",
        ]
        out += [f"  {e['percent']:5.1f}% self       {e['function']}" for e in profile["self"][:10]]
        ours = [e for e in profile["inclusive"] if "booking_service/" in e["function"]]
        out += [f"  {e['percent']:5.1f}% inclusive  {e['function']}" for e in ours[:10]]
    violations = [(row["key"], v) for row in rows for v in row["violations"]]
    out += ["", f"Invariant violations: {len(violations)}"]
    out += [f"  {key}: {v}" for key, v in violations]
    return "\n".join(out)


def _scale_out(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """S6's two sides: throughput, 5xx and sessions, and how the instances were sized."""
    sides = [row for row in rows if row["scenario"] == "S6" and not row["failed"]]
    if not sides:
        return []
    out = ["", f"S6 scale-out, hot sell-out with {sides[0]['details']['clients']} clients:"]
    for row in sides:
        d = row["details"]
        pooler = d.get("pgbouncer")
        route = "via PgBouncer" if pooler else "straight to PostgreSQL"
        parts = [
            f"{_num(row['value'])} bookings/s",
            f"5xx {d['server_errors_5xx']}",
            f"PostgreSQL sessions peak {d['postgres_sessions_peak']}",
        ]
        if pooler:
            parts[-1] += f" (pool {pooler['server_pool']})"
            parts.append(
                f"PgBouncer client connections peak {pooler['peak_client_connections']}, "
                f"waiting peak {pooler['peak_waiting_clients']}"
            )
        batch = (d.get("service_metrics") or {}).get("seat_batch_mean")
        if batch is not None:
            parts.append(f"{batch} bookings per lock hold")
        parts.append(f"booted in {d['start_seconds']} s")
        out.append(
            f"  {row['key']:<13} {d['instances']} instances x {d['workers_per_instance']} "
            f"worker(s) x {d['threads_per_worker']} threads {route}: " + ", ".join(parts)
        )
    pooled = next((row for row in sides if row["key"] == "S6/pgbouncer"), None)
    direct = next((row for row in sides if row["key"] == "S6/direct"), None)
    if pooled and direct and pooled["ratio"] is not None:
        out.append(
            f"  {pooled['details']['instances']} via PgBouncer ÷ "
            f"{direct['details']['instances']} direct: {pooled['ratio']:.3f} (goal ≥ 0.9)"
        )
    out += [
        f"  {row['key']}: {row['details']['boot_fallback']}"
        for row in sides
        if row["details"].get("boot_fallback")
    ]
    return out


def chart(result: dict[str, Any], path: Path) -> str | None:
    """Throughput and latency per row as a PNG; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [row for row in ordered(result["rows"]) if row["scenario"] != "S5" and row["value"]]
    labels = [row["key"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))

    bars = left.bar(labels, [row["value"] for row in rows], color="#4c72b0")
    left.set_yscale("log")
    left.set_title("Throughput (per second; log scale)")
    for bar, row in zip(bars, rows, strict=True):
        note = row["metric"]
        if row["ratio"] is not None:
            note += f"\n{row['ratio']:.2f}x {row['ratio_to']}"
        left.annotate(
            note,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )

    positions = range(len(rows))
    width = 0.4
    right.bar(
        [p - width / 2 for p in positions],
        [row["p50_ms"] or 0 for row in rows],
        width,
        label="p50",
        color="#55a868",
    )
    right.bar(
        [p + width / 2 for p in positions],
        [row["p99_ms"] or 0 for row in rows],
        width,
        label="p99",
        color="#c44e52",
    )
    right.set_xticks(list(positions), labels)
    right.set_title("Latency (ms)")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=30, labelsize=8)
        axis.grid(axis="y", alpha=0.3)

    s5 = next((row for row in result["rows"] if row["scenario"] == "S5" and row["value"]), None)
    subtitle = ""
    if s5:
        rows_seeded = result["sizes"]["growth_rows"]
        subtitle = f" — S5 cost at {rows_seeded:,} rows ÷ at 0: {s5['value']:.2f}"
    figure.suptitle(
        f"booking-service benchmark ({result['mode']}, {result['started_at'][:19]}){subtitle}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)
