"""Errors of the cache tier.

None of these ever reaches an application: the caching gateway catches them, serves from
DynamoDB (fails open) and feeds its circuit breaker. They still descend from
`gateway.errors.GatewayError`, so the project keeps a single root.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class CacheError(GatewayError):
    """Root of the errors raised by cache backends."""


class CacheUnavailable(CacheError):
    """The cache server could not answer: down, slow (timeout), partitioned or erroring.

    The underlying client exception is chained as ``__cause__``.
    """


class CacheCodecError(CacheError, ValueError):
    """Bytes that are not a valid cache entry, or a value the cache codec cannot encode."""


__all__ = ["CacheCodecError", "CacheError", "CacheUnavailable"]
