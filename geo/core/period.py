"""Analysis periods: inclusive month/day ranges, parsed from 'YYYY-MM' or 'YYYY-MM-DD'."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from geo.core.errors import PeriodError


_MONTH = re.compile(r"^\d{4}-\d{2}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse(value: str, *, end: bool) -> date:
    value = str(value).strip()
    if _MONTH.match(value):
        y, m = map(int, value.split("-"))
        if not 1 <= m <= 12:
            raise PeriodError(f"period bound {value!r}: month {m} is not 1-12")
        if end:
            nxt = date(y + (m == 12), m % 12 + 1, 1)
            return nxt - timedelta(days=1)
        return date(y, m, 1)
    if _DAY.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise PeriodError(f"period bound {value!r}: {exc}") from None
    raise PeriodError(f"period bound {value!r}: expected YYYY-MM or YYYY-MM-DD")


@dataclass(frozen=True)
class Period:
    """An inclusive date range [start, end]. ``month_only`` is True when both bounds were months."""

    start: date
    end: date

    def __post_init__(self):
        if self.end < self.start:
            raise PeriodError(f"period ends ({self.end}) before it starts ({self.start})")

    @classmethod
    def parse(cls, start: str | None, end: str | None = None) -> "Period":
        if start is None and end is None:
            raise PeriodError("a period needs at least a start or an end")
        s = _parse(start if start is not None else end, end=False)
        e = _parse(end if end is not None else start, end=True)
        return cls(s, e)

    @classmethod
    def parse_range(cls, text: str) -> "Period":
        """Parse 'FROM:TO' (e.g. '2018-01:2018-06')."""
        if ":" not in text:
            return cls.parse(text, text)
        a, b = text.split(":", 1)
        return cls.parse(a or None, b or None)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def months(self) -> list[str]:
        out, y, m = [], self.start.year, self.start.month
        while (y, m) <= (self.end.year, self.end.month):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out

    def previous(self) -> "Period":
        """The period of equal length ending the day before this one starts."""
        if self.start.day == 1 and (self.end + timedelta(days=1)).day == 1:
            n = len(self.months)
            y, m = self.start.year, self.start.month - n
            while m < 1:
                y, m = y - 1, m + 12
            s = date(y, m, 1)
            return Period(s, self.start - timedelta(days=1))
        e = self.start - timedelta(days=1)
        return Period(e - timedelta(days=self.days - 1), e)

    def mask(self, months: pd.Series, occurred_at: pd.Series | None = None) -> np.ndarray:
        """Rows inside the period: by date where known, else by month (a month counts when it overlaps)."""
        mon = pd.to_datetime(months.astype("string") + "-01", errors="coerce")
        mon_end = mon + pd.offsets.MonthEnd(0)
        by_month = (mon_end >= pd.Timestamp(self.start)) & (mon <= pd.Timestamp(self.end))
        if occurred_at is None:
            return by_month.fillna(False).to_numpy(bool)
        t = pd.to_datetime(occurred_at)
        has_t = t.notna()
        by_time = (t >= pd.Timestamp(self.start)) & (t < pd.Timestamp(self.end) + pd.Timedelta(days=1))
        return np.where(has_t.to_numpy(), by_time.fillna(False).to_numpy(bool), by_month.fillna(False).to_numpy(bool))

    def label(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()}"

    def to_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "days": self.days}

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.label()
