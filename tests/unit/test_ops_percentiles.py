"""Percentiles estimated from cumulative histogram buckets (as PromQL histogram_quantile)."""

from __future__ import annotations

import math

import pytest

from booking_service.locking import parse_holder
from booking_service.ops.dashboard import quantile_from_buckets, summarize_histogram

INF = math.inf


def test_no_observations_has_no_percentile() -> None:
    assert quantile_from_buckets(0.5, [(0.1, 0), (1.0, 0), (INF, 0)]) is None
    assert quantile_from_buckets(0.5, []) is None


def test_interpolates_linearly_inside_the_bucket() -> None:
    buckets = [(1.0, 0), (2.0, 10), (INF, 10)]
    assert quantile_from_buckets(0.5, buckets) == pytest.approx(1.5)
    assert quantile_from_buckets(0.95, buckets) == pytest.approx(1.95)
    assert quantile_from_buckets(1.0, buckets) == pytest.approx(2.0)


def test_first_bucket_starts_at_zero() -> None:
    assert quantile_from_buckets(0.5, [(0.01, 4), (INF, 4)]) == pytest.approx(0.005)


def test_picks_the_bucket_holding_the_rank() -> None:
    # 90 fast, 9 medium, 1 slow observation.
    buckets = [(0.001, 90), (0.01, 99), (0.1, 100), (INF, 100)]
    assert quantile_from_buckets(0.5, buckets) == pytest.approx(0.001 * 50 / 90)
    assert quantile_from_buckets(0.95, buckets) == pytest.approx(0.001 + 0.009 * 5 / 9)
    assert quantile_from_buckets(0.99, buckets) == pytest.approx(0.01)
    assert quantile_from_buckets(0.995, buckets) == pytest.approx(0.055)


def test_empty_buckets_before_the_rank_are_skipped() -> None:
    buckets = [(0.1, 0), (0.2, 0), (0.5, 0), (1.0, 2), (INF, 2)]
    assert quantile_from_buckets(0.5, buckets) == pytest.approx(0.75)


def test_rank_in_the_infinite_bucket_returns_the_highest_finite_bound() -> None:
    buckets = [(0.1, 1), (1.0, 2), (INF, 10)]
    assert quantile_from_buckets(0.99, buckets) == 1.0


def test_quantile_out_of_range_is_none() -> None:
    assert quantile_from_buckets(1.5, [(1.0, 1), (INF, 1)]) is None


def test_summarize_sums_workers_and_drops_the_infinite_bucket() -> None:
    samples = [
        ("x_bucket", {"le": "0.1"}, 3.0),
        ("x_bucket", {"le": "1.0"}, 4.0),
        ("x_bucket", {"le": "+Inf"}, 4.0),
        ("x_bucket", {"le": "0.1"}, 1.0),  # a second label set (another worker or label)
        ("x_bucket", {"le": "1.0"}, 4.0),
        ("x_bucket", {"le": "+Inf"}, 6.0),
        ("x_count", {}, 10.0),
        ("x_sum", {}, 7.5),
        ("x_created", {}, 1700000000.0),
    ]
    summary = summarize_histogram(samples)
    assert summary.count == 10 and summary.sum == pytest.approx(7.5)
    assert summary.buckets == [(0.1, 4), (1.0, 8)]
    assert summary.p50 == pytest.approx(0.1 + 0.9 * 1 / 4)
    assert summary.p99 == 1.0  # in +Inf


def test_parse_holder() -> None:
    assert parse_holder("web-1:4242:abc") == ("web-1", 4242)
    assert parse_holder("host:with:colons:17:abc") == ("host:with:colons", 17)
    assert parse_holder("opaque") == (None, None)
    assert parse_holder("a:b:c") == (None, None)
