"""TenantRateLimits: per-tenant request rates, checked as requests are admitted.

A token bucket per limited tenant: ``limit`` requests per second, a burst of one second's
worth (at least one). A request over its tenant's limit is answered ``rate_limited`` at
once, before it is prepared or queued. The limit is per worker: a pool of N workers
admits up to N times it (docs/protocol.md, "Tenants"). A pure unit: time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    limit_per_s: float
    tokens: float
    updated: float


class TenantRateLimits:
    def __init__(self, limits_per_s: Mapping[str, float]) -> None:
        self._limits = dict(limits_per_s)
        self._buckets: dict[str, _Bucket] = {}

    def __bool__(self) -> bool:
        return bool(self._limits)

    def limit_of(self, tenant: str | None) -> float | None:
        return self._limits.get(tenant) if tenant is not None else None

    def allow(self, tenant: str | None, now: float) -> bool:
        """Whether one more request of ``tenant`` fits its limit at ``now`` (takes a token)."""
        limit = self.limit_of(tenant)
        if limit is None:
            return True
        assert tenant is not None
        burst = max(1.0, limit)
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(limit, burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * limit)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
