"""API keys, roles, the API's error classes and the per-key rate limiter.

Keys
----
A key looks like ``hs_<key_id>_<secret>``: ``key_id`` is 10 hex characters
(shown in ``harmspot keys list`` and the audit log), ``secret`` 32 random bytes
(``secrets.token_urlsafe``). Only ``sha256(key)`` is stored; a presented key is
hashed and compared with :func:`hmac.compare_digest` (constant time, STYLE.md
point 9). Keys travel only in the ``X-API-Key`` header, never in a query string.

Roles
-----
================  ===========================================================
``viewer``        layers (catalogue, GeoJSON, tiles, rasters) and the map;
                  never incident-level (point) layers
``analyst``       everything a viewer sees, incident-level layers, runs, uploads
``admin``         everything, plus the audit log
``partner``       aggregated cell layers only (layers with a ``count`` column),
                  with every cell of fewer than k incidents suppressed (k =
                  ``HARMSPOT_PARTNER_K``, default 5); no rasters, points or runs
================  ===========================================================
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from geo.core.errors import HarmspotError

ROLES = ("viewer", "analyst", "admin", "partner")

#: What each role may do. The API checks these names, nothing else.
PERMISSIONS = {
    "viewer": {"read_layers", "read_rasters", "map"},
    "analyst": {"read_layers", "read_rasters", "map", "incident_level", "runs"},
    "admin": {"read_layers", "read_rasters", "map", "incident_level", "runs", "audit"},
    "partner": {"read_layers"},
}


# ---------------------------------------------------------------------------------------- errors
class ApiError(HarmspotError):
    """Base of errors the API turns into a 4xx/5xx JSON error (see services.api.ERROR_STATUS)."""

    code = "bad_request"

    def __init__(self, message: str, **detail):
        super().__init__(message)
        self.detail = detail


class AuthRequired(ApiError):
    code = "unauthorized"


class Forbidden(ApiError):
    code = "forbidden"


class NotFound(ApiError):
    code = "not_found"


class LimitExceeded(ApiError):
    code = "limit_exceeded"


class PayloadTooLarge(ApiError):
    code = "payload_too_large"


class RateLimited(ApiError):
    code = "rate_limited"


class NotAvailable(ApiError):
    code = "not_available"


class InvalidParameter(ApiError):
    code = "invalid_parameter"


# ---------------------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class Principal:
    """Who is asking: the key's id and role."""

    key_id: str
    role: str

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, set())


def hash_key(key: str) -> str:
    """sha256 hex digest of the full key string (keys are 256-bit random, so no salt/stretching is needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(role: str) -> tuple[str, str, str]:
    """A fresh key: returns ``(key_id, key, key_hash)``. Only the hash and id are to be stored."""
    if role not in ROLES:
        raise HarmspotError(f"--role {role!r}: use one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(5)
    key = f"hs_{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, key, hash_key(key)


def parse_key_id(key: str) -> str | None:
    """The key id inside a presented key, or None if it is not shaped like a harmspot key."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "hs" or len(parts[1]) != 10:
        return None
    if any(c not in "0123456789abcdef" for c in parts[1]):
        return None
    return parts[1]


class KeyChecker:
    """Checks ``X-API-Key`` values against the store's hashes (constant-time), with a short cache."""

    def __init__(self, store, cache_seconds: float = 10.0):
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def peek(self, key: str | None) -> Principal | None:
        """The cached, still valid principal for this key, or None (then call :meth:`check`)."""
        if not key:
            return None
        hit = self._cache.get(hash_key(key))
        if hit is not None and hit[1] is not None and time.monotonic() - hit[0] < self.cache_seconds:
            return hit[1]
        return None

    def check(self, key: str | None) -> Principal:
        if not key:
            raise AuthRequired("missing API key: send it in the X-API-Key header")
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self.cache_seconds:
            principal = hit[1]
        else:
            principal = self._lookup(key, digest)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now, principal)
        if principal is None:
            raise AuthRequired("invalid or revoked API key")
        return principal

    def _lookup(self, key: str, digest: str) -> Principal | None:
        key_id = parse_key_id(key)
        row = self.store.get_key(key_id) if key_id else None
        # Compare even when there is no row, so timing does not reveal which key ids exist.
        stored = row["key_hash"] if row else "0" * 64
        ok = hmac.compare_digest(stored.encode(), digest.encode())
        if not ok or row is None or row.get("revoked"):
            return None
        return Principal(key_id=row["key_id"], role=row["role"])


# ---------------------------------------------------------------------------------------- rate limit
class RateLimiter:
    """Token bucket per key: ``per_minute`` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, who: str) -> None:
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[who] = (tokens, now)
                raise RateLimited(f"rate limit of {self.per_minute} requests a minute exceeded; retry shortly",
                                  retry_after_s=round((1.0 - tokens) / rate, 2))
            self._buckets[who] = (tokens - 1.0, now)
