"""Realistic, seeded DAP data for one partner tenant: a few hundred customers over three years."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Customer:
    established: dt.date
    last_signin: dt.date


def generate_customers(seed: str, today: dt.date, count: int | None = None) -> list[Customer]:
    """Customers with DAP: established over ~3 years, most signed in lately, some long ago."""
    rng = random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
    total = count if count is not None else rng.randint(150, 400)
    customers = []
    for _ in range(total):
        established = today - dt.timedelta(days=rng.randint(30, 3 * 365))
        age = (today - established).days
        roll = rng.random()
        if roll < 0.55:
            since = rng.randint(0, 30)
        elif roll < 0.75:
            since = rng.randint(31, 90)
        else:
            since = rng.randint(91, 2 * 365)
        customers.append(Customer(established, today - dt.timedelta(days=min(since, age))))
    return customers


def spread_customers(dates: int, today: dt.date) -> list[Customer]:
    """One customer a day: `dates` distinct establishment dates and as many sign-in dates."""
    return [Customer(established=today - dt.timedelta(days=30 + i), last_signin=today - dt.timedelta(days=i))
            for i in range(dates)]


def _us_date(day: dt.date) -> str:
    return f"{day.month}/{day.day}/{day.year}"


def _grouped(days: list[dt.date]) -> list[dict[str, Any]]:
    counts: dict[dt.date, int] = {}
    for day in days:
        counts[day] = counts.get(day, 0) + 1
    return [{"date": _us_date(day), "count": n} for day, n in sorted(counts.items())]


def statistics_payload(tenant_id: str, customers: list[Customer], base_url: str) -> dict[str, Any]:
    """The delegatedAdminStatistics document, shaped like Microsoft's documented example."""
    return {
        "@odata.context": f"{base_url}/CustomerServiceAdminApi/Web/v1/$metadata"
                          "#delegatedAdminStatistics/$entity",
        "id": tenant_id,
        "partnerTenantId": tenant_id,
        "totalDapCustomerCount": len(customers),
        "establishedDapCount": _grouped([c.established for c in customers]),
        "inactiveDapCount": _grouped([c.last_signin for c in customers]),
    }
