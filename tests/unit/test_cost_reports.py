"""Report periods in UTC calendar terms: month arithmetic across the year's end, each named period's bounds, and the
windows compared against."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chamberlain.cost.reports import compared_window, month_start, next_month, previous_month, window


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "after", "before"),
    [
        (utc(2026, 1, 1), utc(2026, 2, 1), utc(2025, 12, 1)),
        (utc(2026, 11, 1), utc(2026, 12, 1), utc(2026, 10, 1)),
        (utc(2026, 12, 1), utc(2027, 1, 1), utc(2026, 11, 1)),
    ],
)
def test_month_arithmetic(start: datetime, after: datetime, before: datetime) -> None:
    assert next_month(start) == after
    assert previous_month(start) == before
    assert month_start(start + timedelta(days=20, hours=5)) == start


def test_named_periods() -> None:
    now = utc(2027, 1, 15, 8, 30)
    assert (window("24h", now).since, window("24h", now).until) == (now - timedelta(hours=24), now)
    assert window("7d", now).since == utc(2027, 1, 8, 8, 30)
    month = window("month", now)
    assert (month.label, month.since, month.until) == ("2027-01 to date", utc(2027, 1, 1), now)
    last = window("last-month", now)
    assert (last.label, last.since, last.until) == ("2026-12", utc(2026, 12, 1), utc(2027, 1, 1))


def test_compared_windows() -> None:
    now = utc(2027, 1, 15, 8, 30)
    current = window("7d", now)
    previous = compared_window(current, "previous", now)
    assert previous is not None
    assert (previous.since, previous.until) == (utc(2027, 1, 1, 8, 30), current.since)
    assert previous.label == "2027-01-01 08:30..2027-01-08 08:30 UTC"
    assert compared_window(current, "last-month", now) == window("last-month", now)
    assert compared_window(current, "none", now) is None
