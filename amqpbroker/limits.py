"""Every limit rule, in one place, with RabbitMQ's names, meanings and replies
(rabbit_vhost_limit, rabbit_auth_backend_internal, rabbit_reader, rabbit_channel 3.10):

- per vhost ``max-connections`` and ``max-queues``; per user ``max-connections`` and
  ``max-channels`` (the user's channels on all its connections).  A limit of 0 allows
  none, a negative one or none at all means no limit.  Only what is created after a
  limit is reached is refused: connections, channels and queues that exist stay.
- ``limits.max_buffered_bytes``: what one connection holds of content that is not in a
  queue yet (bodies of messages still being assembled, messages published in an
  uncommitted transaction, and then the partial frame in the reader).  Backpressure cannot help
  there (only more input completes a message or reaches the commit), so past the cap the
  connection is closed with 530, as RabbitMQ's other limits; no other connection is
  touched.

Limits are dicts by RabbitMQ's key names (``{"max-connections": 1}``).  The callers count
what exists; the functions here decide and raise ``errors.NotAllowed`` (530) or
``errors.PreconditionFailed`` (406) with RabbitMQ's texts and method ids."""
from __future__ import annotations

from . import errors

VHOST_KEYS = ("max-connections", "max-queues")
USER_KEYS = ("max-connections", "max-channels")


class LimitError(ValueError):
    """A limits mapping that is not one: ``key`` is the offending key (or "")."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def parse(value, keys: tuple[str, ...]) -> dict:
    """A limits mapping from YAML or definitions JSON: only ``keys``, integer values
    (RabbitMQ's validation); a negative value is kept (it means no limit)."""
    if value is None:
        return {}
    if isinstance(value, list):  # what RabbitMQ writes in vhosts[].limits: [[key, n], ...]
        try:
            value = {k: v for k, v in value}
        except (TypeError, ValueError):
            raise LimitError("", f"expected a mapping of {', '.join(keys)}, got {value!r}")
    if not isinstance(value, dict):
        raise LimitError("", f"expected a mapping of {', '.join(keys)}, got {value!r}")
    for k, v in value.items():
        if k not in keys:
            raise LimitError(str(k), f"unknown limit (expected one of {', '.join(keys)})")
        if not isinstance(v, int) or isinstance(v, bool):
            raise LimitError(k, f"expected an integer (0: none allowed, negative: no "
                                f"limit), got {v!r}")
    return dict(value)


def _limit(limits, key: str) -> int | None:
    """The limit in force, or None for no limit (absent or negative)."""
    n = limits.get(key) if limits else None
    return None if n is None or n < 0 else n


def _reached(limits, key: str, count) -> int | None:
    """The limit when ``count()`` (called only when there is a limit) has reached it."""
    n = _limit(limits, key)
    if n is None or (n and count() < n):
        return None
    return n


# ---------------------------------------------------------------------- connections

def open_connection(broker, user, vhost: str) -> None:
    """Connection.Open, before the vhost access check (rabbit_reader's order): the
    vhost's max-connections, then the user's.  A vhost that does not exist is left to
    the access check (its "vhost ... not found" comes first in RabbitMQ too)."""
    vh = broker.vhosts.get(vhost)
    if vh is None:
        return
    conns = broker.connections
    n = _reached(vh.limits, "max-connections",
                 lambda: sum(1 for c in conns if c.vhost is vh))
    if n is not None:
        raise errors.NotAllowed(f"access to vhost '{vhost}' refused for user '{user.name}': "
                                f"connection limit ({n}) is reached", 10, 40)
    n = _reached(user.limits, "max-connections",
                 lambda: sum(1 for c in conns if c.user.name == user.name))
    if n is not None:
        raise errors.NotAllowed(f"connection refused for user '{user.name}': user "
                                f"connection limit ({n}) is reached", 10, 40)


def open_channel(broker, user) -> None:
    """A frame for a channel not open yet (after the channel_max check): the user's
    max-channels over all its connections.  RabbitMQ closes the connection, method 0."""
    n = _reached(user.limits, "max-channels", lambda: sum(
        len(c.channels) for c in broker.connections if c.user.name == user.name))
    if n is not None:
        raise errors.NotAllowed(f"number of channels opened for user '{user.name}' has "
                                f"reached the maximum allowed user limit of ({n})")


# ---------------------------------------------------------------------- queues

def declare_queue(vhost_limits, count: int, queue: str, vhost: str) -> None:
    """A queue about to be created (not redeclared, not passive), after the name's
    ``amq.`` check and before its arguments are checked, as rabbit_channel."""
    n = _reached(vhost_limits, "max-queues", lambda: count)
    if n is not None:
        raise errors.PreconditionFailed(f"cannot declare queue '{queue}': queue limit in "
                                        f"vhost '{vhost}' ({n}) is reached")


# ---------------------------------------------------------------------- buffered bytes

def buffered(cap: int, held: int) -> None:
    """``held`` bytes of a connection's input not in a queue yet, against
    ``limits.max_buffered_bytes`` (0: no cap)."""
    if cap and held > cap:
        raise errors.NotAllowed(f"connection buffer limit ({cap} bytes) is reached: "
                                f"{held} bytes of unrouted content held")
