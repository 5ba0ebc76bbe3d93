"""Settings -> the stream follower of a caching gateway (`gateway.factory` calls this)."""

from __future__ import annotations

from gateway.config import Settings
from gateway.gateway import CachingGateway
from gateway.streams.apply import ChangeApplier
from gateway.streams.coordination import Coordinator, LocalCoordinator, RedisCoordinator
from gateway.streams.follower import StreamFollower, new_owner


def build_coordinator(settings: Settings, lease_s: float) -> Coordinator:
    """Leases and checkpoints: in Redis for the shared backends, in the process for memory."""
    if settings.CACHE_BACKEND in ("redis", "tiered"):
        from redis import Redis

        client = Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=settings.REDIS_TIMEOUT_S,
            socket_connect_timeout=settings.REDIS_TIMEOUT_S,
        )
        return RedisCoordinator(
            client, owner=new_owner(), lease_s=lease_s, key_prefix=settings.REDIS_KEY_PREFIX
        )
    return LocalCoordinator()


def build_follower(
    settings: Settings, gateway: CachingGateway, *, lease_s: float | None = None
) -> StreamFollower:
    """A follower applying the streams of ``gateway``'s collections to its cache."""
    from gateway.streams.follower import DEFAULT_LEASE_S

    lease = DEFAULT_LEASE_S if lease_s is None else lease_s
    return StreamFollower(
        gateway.service,
        ChangeApplier(gateway, gateway.intent_ttl_s, gateway.clock),
        build_coordinator(settings, lease),
        fill_deadline_s=gateway.fill_deadline_s,
        lease_s=lease,
    )
