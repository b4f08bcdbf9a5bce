"""Every permission rule, in one place: the channel calls these before it acts, and the
HTTP API (issue 12) calls the same ones, so that both refuse what RabbitMQ refuses, in its
order and with its texts (rabbit_channel, rabbit_access_control).

A user's rights on a vhost are three regular expressions (``Permissions``) searched in
resource names; an operation function checks every right the operation needs and raises
``errors.AccessRefused`` (403, a channel error) for the first one missing.  The functions
take the permissions, the vhost name and the user name, then the operation's own values:
``access.declare_queue(perms, vhost, user, name, args)``.  Nothing here looks anything up:
where a rule depends on state (an exchange that exists already), the caller says so.
Topic permissions (``TopicPermissions``, ``topic``) are regexes on routing keys."""
from __future__ import annotations

import re

from . import errors

DEFAULT = "amq.default"  # the name RabbitMQ checks for the default exchange ""


class Permissions:
    """configure / write / read regular expressions of one user on one vhost."""

    __slots__ = ("configure", "write", "read", "patterns")

    def __init__(self, p=None, *, configure: str = "", write: str = "", read: str = ""):
        """``p``: anything with configure/write/read strings (config.Permission)."""
        if p is not None:
            configure, write, read = p.configure, p.write, p.read
        self.patterns = (configure, write, read)  # as given, for listing and export
        # "" means nothing, as RabbitMQ's "^$"
        self.configure = re.compile(configure or "^$")
        self.write = re.compile(write or "^$")
        self.read = re.compile(read or "^$")


# ---------------------------------------------------------------------- the one rule

def check(perms: Permissions, perm: str, kind: str, name: str, vhost: str,
          user: str) -> None:
    """``perm`` ("configure", "write", "read") on the resource ``kind`` ("queue",
    "exchange") called ``name``."""
    if not getattr(perms, perm).search(name):
        raise errors.AccessRefused(
            f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")


def allowed(perms: Permissions | None, perm: str, name: str) -> bool:
    """The same test without raising (for listings filtered by what a user may see)."""
    return perms is not None and getattr(perms, perm).search(name) is not None


def _not_default(name: str) -> None:
    if name == "":
        raise errors.AccessRefused("operation not permitted on the default exchange")


# ---------------------------------------------------------------------- vhost

def open_vhost(permissions: dict, user: str, vhost: str, exists: bool) -> Permissions:
    """Connection.Open (and a management user's vhost): the user's permissions there.
    ``permissions``: (user, vhost) -> Permissions.  NotAllowed (530) as RabbitMQ."""
    if not exists:
        raise errors.NotAllowed(f"vhost {vhost} not found", 10, 40)
    perms = permissions.get((user, vhost))
    if perms is None:
        raise errors.NotAllowed(f"access to vhost '{vhost}' refused for user '{user}'", 10, 40)
    return perms


# ---------------------------------------------------------------------- exchanges

def declare_exchange(perms: Permissions, vhost: str, user: str, name: str, args: dict | None,
                     exists: bool) -> None:
    """Configure on the exchange; when it is created with an ``alternate-exchange``, read on
    it and write on the alternate (rabbit_channel's exchange.declare)."""
    check(perms, "configure", "exchange", name or DEFAULT, vhost, user)
    ae = (args or {}).get("alternate-exchange")
    if isinstance(ae, str) and not exists:
        check(perms, "read", "exchange", name, vhost, user)
        check(perms, "write", "exchange", ae, vhost, user)


def delete_exchange(perms: Permissions, vhost: str, user: str, name: str) -> None:
    check(perms, "configure", "exchange", name or DEFAULT, vhost, user)


def bind_exchange(perms: Permissions, vhost: str, user: str, source: str,
                  destination: str) -> None:
    """Exchange.Bind and Exchange.Unbind: write on the destination, read on the source;
    the default exchange can be neither."""
    if destination == "" or source == "":
        raise errors.AccessRefused("operation not permitted on the default exchange")
    check(perms, "write", "exchange", destination, vhost, user)
    check(perms, "read", "exchange", source, vhost, user)


unbind_exchange = bind_exchange


def publish(perms: Permissions, vhost: str, user: str, exchange: str) -> None:
    """Basic.Publish (before the exchange is looked up, as RabbitMQ)."""
    check(perms, "write", "exchange", exchange or DEFAULT, vhost, user)


# ---------------------------------------------------------------------- queues

def declare_queue(perms: Permissions, vhost: str, user: str, name: str, args: dict | None,
                  arg_types: dict | None = None) -> None:
    """A queue declared (not passively): configure on it; with an
    ``x-dead-letter-exchange``, read on the queue and write on that exchange, after its
    type is checked (rabbit_channel's check_dlx).  A server-named queue is checked under
    the name it will get."""
    check(perms, "configure", "queue", name, vhost, user)
    dlx = (args or {}).get("x-dead-letter-exchange")
    if dlx is None:
        return
    if not isinstance(dlx, str):
        type_name = (arg_types or {}).get("x-dead-letter-exchange", type(dlx).__name__)
        raise errors.PreconditionFailed(
            f"invalid type '{type_name}' for arg 'x-dead-letter-exchange' in queue "
            f"'{name}' in vhost '{vhost}'")
    check(perms, "read", "queue", name, vhost, user)
    check(perms, "write", "exchange", dlx or DEFAULT, vhost, user)


def delete_queue(perms: Permissions, vhost: str, user: str, name: str) -> None:
    """Configure on the queue (a missing queue too, as RabbitMQ)."""
    check(perms, "configure", "queue", name, vhost, user)


def purge_queue(perms: Permissions, vhost: str, user: str, name: str) -> None:
    check(perms, "read", "queue", name, vhost, user)


def consume(perms: Permissions, vhost: str, user: str, queue: str) -> None:
    """Basic.Consume and Basic.Get (before the queue is looked up, as RabbitMQ)."""
    check(perms, "read", "queue", queue, vhost, user)


get = consume


def bind_queue(perms: Permissions, vhost: str, user: str, exchange: str, queue: str) -> None:
    """Queue.Bind and Queue.Unbind: not the default exchange, write on the queue, read on
    the exchange."""
    _not_default(exchange)
    check(perms, "write", "queue", queue, vhost, user)
    check(perms, "read", "exchange", exchange, vhost, user)


unbind_queue = bind_queue


# ---------------------------------------------------------------------- topic permissions
# RabbitMQ's topic authorisation (rabbit_channel:check_topic_authorisation,
# rabbit_auth_backend_internal:check_topic_access): only for an exchange of type ``topic``
# (not x-delayed-message, whatever its x-delayed-type) that the user has a topic permission
# on; with none, every routing key is allowed.  Write is checked on Basic.Publish, read on
# Queue.Bind/Unbind and Exchange.Bind/Unbind (the source), against the routing key.

class TopicPermissions:
    """A user's topic permissions on one vhost: exchange -> (write, read) regexes, with
    ``{username}`` and ``{vhost}`` expanded once here and compiled once (``_compile``).
    RabbitMQ expands ``{client_id}`` only for MQTT and STOMP connections (their
    variable_map): for AMQP 0-9-1 it stays literal text, so here too.  Bytes patterns
    searched in the routing key's bytes, as RabbitMQ's re:run on binaries (``.`` is one
    byte of a UTF-8 character, a word character is ASCII)."""

    __slots__ = ("user", "vhost", "rules", "patterns")

    def __init__(self, user: str, vhost: str, patterns: dict):
        """``patterns``: exchange -> (write, read) as configured (kept for export)."""
        self.user, self.vhost, self.patterns = user, vhost, dict(patterns)
        self.rules = {x: tuple(_compile(expand(p or "^$", user, vhost)) for p in wr)
                      for x, wr in self.patterns.items()}


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # names and keys keep their wire bytes


def expand(pattern: str, user: str, vhost: str) -> str:
    """RabbitMQ's expand_topic_permission: plain text replacement, not escaped (a user
    ``a.b`` matches ``a.b`` as a regex does), {username} before {vhost} (its map order)."""
    return pattern.replace("{username}", user).replace("{vhost}", vhost)


_compiled: dict = {}


def _compile(pattern: str):
    """Compiled once per expanded pattern (users share them); None for one that expansion
    made invalid (a user name with a "("): nothing matches it, so the check refuses."""
    if pattern not in _compiled:
        if len(_compiled) > 10000:
            _compiled.clear()
        try:
            _compiled[pattern] = re.compile(_raw(pattern))
        except (re.error, UnicodeEncodeError):
            _compiled[pattern] = None
    return _compiled[pattern]


def topic(topics: TopicPermissions | None, perm: str, exchange, routing_key: str) -> bool:
    """``perm`` ("write", "read") on ``routing_key`` through ``exchange`` (an exchange
    object; None, a missing one, is not checked, as RabbitMQ).  True when a topic
    permission applied (the answer holds for this routing key only: not to be cached)."""
    if topics is None or exchange is None or exchange.type != "topic":
        return False
    rule = topics.rules.get(exchange.name)
    if rule is None:
        return False
    regex = rule[perm == "read"]
    if regex is None or regex.search(_raw(routing_key)) is None:
        raise errors.AccessRefused(
            f"access to topic '{routing_key}' in exchange '{exchange.name}' in vhost "
            f"'{topics.vhost}' refused for user '{topics.user}'")
    return True


# ---------------------------------------------------------------------- management
# The rules of RabbitMQ's management plugin (rabbit_mgmt_util), for the admin facade and
# the HTTP API: a user tag decides what a user may see and do beyond its vhosts' rights.

MANAGEMENT_TAGS = frozenset({"management", "policymaker", "monitoring", "administrator"})


def management(user: str, tags) -> None:
    """May use the management interface at all."""
    if not MANAGEMENT_TAGS.intersection(tags):
        raise errors.AccessRefused("Not management user")


def administrator(user: str, tags) -> None:
    """Users, permissions, definitions, other users' connections."""
    if "administrator" not in tags:
        raise errors.AccessRefused("Not administrator user")


def policymaker(user: str, tags) -> None:
    """Policies: policymaker (on the vhosts it may reach) or administrator users."""
    if "policymaker" not in tags and "administrator" not in tags:
        raise errors.AccessRefused("Not policymaker user")


def sees_all(tags) -> bool:
    """Monitoring and administrator users see every vhost and every connection."""
    return "administrator" in tags or "monitoring" in tags


def sees_vhost(permissions: dict, user: str, tags, vhost: str) -> bool:
    """A vhost appears in a user's listings: it sees all, or has rights there."""
    return sees_all(tags) or (user, vhost) in permissions


def sees_connection(user: str, tags, owner: str | None) -> bool:
    """A connection (and its channels, consumers) appears: it sees all, or it is its own."""
    return sees_all(tags) or owner == user


def close_connection(user: str, tags, owner: str | None) -> None:
    """Its own connection, or any as an administrator."""
    if owner != user and "administrator" not in tags:
        raise errors.AccessRefused(f"user '{user}' may not close a connection of another user")
