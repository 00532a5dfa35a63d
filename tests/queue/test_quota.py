"""Quota day boundaries, DST and the limit arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gouache.errors import QuotaExceeded
from gouache.queue.quota import QuotaPolicy


def test_day_changes_at_local_midnight_not_utc() -> None:
    p = QuotaPolicy("Asia/Shanghai")  # UTC+8
    before = datetime(2026, 3, 1, 15, 59, tzinfo=UTC)  # 23:59 local
    after = before + timedelta(minutes=1)  # 00:00 local
    assert p.day_key(before) == "2026-03-01"
    assert p.day_key(after) == "2026-03-02"
    assert p.resets_at(before) == after
    assert p.resets_at(before).tzinfo == ZoneInfo("Asia/Shanghai")


def test_dst_spring_forward_day_is_23_hours() -> None:
    p = QuotaPolicy("Europe/Berlin")
    start = datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert p.seconds_until_reset(start) == 23 * 3600


def test_dst_fall_back_day_is_25_hours() -> None:
    p = QuotaPolicy("America/New_York")
    start = datetime(2026, 11, 1, 0, 0, tzinfo=ZoneInfo("America/New_York"))
    assert p.seconds_until_reset(start) == 25 * 3600


def test_midnight_that_does_not_exist_resets_at_first_real_time() -> None:
    # Chile moves clocks from 24:00 to 01:00 in September: local midnight is skipped.
    p = QuotaPolicy("America/Santiago")
    evening = datetime(2026, 9, 5, 22, 0, tzinfo=ZoneInfo("America/Santiago"))
    reset = p.resets_at(evening)
    assert reset.astimezone(UTC) == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    assert p.day_key(reset) == "2026-09-06"
    assert p.day_key(reset.astimezone(UTC) - timedelta(seconds=1)) == "2026-09-05"


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(
        ["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
    ),
)
def test_reset_is_the_first_moment_of_the_next_day(now: datetime, tz: str) -> None:
    p = QuotaPolicy(tz)
    reset = p.resets_at(now)
    assert reset > now
    assert p.day_key(reset) != p.day_key(now)
    assert p.day_key(reset.astimezone(UTC) - timedelta(seconds=1)) == p.day_key(now)
    assert 0 < p.seconds_until_reset(now) <= 26 * 3600


def test_check_refuses_past_the_limit_with_reset_time() -> None:
    p = QuotaPolicy("UTC", default_limit=100)
    now = datetime(2026, 5, 5, 12, 0, tzinfo=UTC)
    p.check(used=99, cost=1, limit=100, now=now)
    with pytest.raises(QuotaExceeded) as err:
        p.check(used=100, cost=1, limit=100, now=now)
    assert err.value.remaining == 0
    assert err.value.resets_at == datetime(2026, 5, 6, tzinfo=UTC)
    assert "100" in str(err.value)


def test_limit_precedence() -> None:
    p = QuotaPolicy(default_limit=100)
    assert p.limit_for() == 100
    assert p.limit_for(tier_limit=300) == 300
    assert p.limit_for(tier_limit=300, user_limit=5) == 5
    assert p.limit_for(user_limit=0) == 0


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        QuotaPolicy().day_key(datetime(2026, 1, 1))
