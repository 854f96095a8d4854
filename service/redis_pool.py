"""Redis clients for the API's processes, where hundreds of requests may wait on Redis at once."""

from __future__ import annotations

import redis

# Connections one client keeps; a request beyond them waits (at most `timeout`) for a free one.
MAX_CONNECTIONS = 20


def redis_client(url: str, timeout: float = 1.0) -> redis.Redis:
    """A client whose pool waits for a free connection instead of failing at its limit.

    Under gevent a process serves far more requests at once than it had threads; redis-py's
    default pool refuses the 101st concurrent user ("Too many connections").
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return redis.Redis(connection_pool=pool)
