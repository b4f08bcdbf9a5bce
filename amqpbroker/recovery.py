"""Recovery of one vhost from the store (``VirtualHost.restore``): the policies set while
an earlier process ran, then exchanges, queues and bindings, then the messages of each
queue in their order, marked redelivered.  Nothing is written back."""
from __future__ import annotations

from . import errors, policies
from .exchanges import Binding, exchange_class
from .queues import QueueArgs
from .store import StoreError


def restore(vhost, recovered) -> None:
    """Rebuild durable definitions and messages from the store (nothing is written
    back): definitions first, then messages in their order, marked redelivered."""
    now = vhost.clock()
    policies.restore(vhost, recovered)
    for d in recovered.exchanges:
        if d.vhost != vhost.name or d.name in vhost.exchanges:
            continue
        cls = exchange_class(d.type, d.arguments)
        if cls is None:  # (a type no longer registered: not ours to drop)
            where = getattr(vhost.store, "path", "the store")
            raise StoreError(f"{where}: exchange '{d.name}' {vhost._in()} has the unknown "
                             f"type '{d.type}'")
        ex = cls(d.name, True, d.auto_delete, d.internal, d.arguments)
        ex.arg_types = d.arg_types
        vhost._add_exchange(ex)
    for d in recovered.queues:
        if d.vhost != vhost.name:
            continue
        try:
            args = QueueArgs.parse(d.name, vhost.name, d.arguments)
        except errors.AMQPError:
            args = QueueArgs()
        q = vhost._new_queue(d.name, True, None, d.auto_delete, d.arguments, args, now,
                            d.arg_types)
        q.touch(now)
    for d in recovered.bindings:
        if d.vhost != vhost.name:
            continue
        source = vhost.exchanges.get(d.source)
        dest = (vhost.queues if d.dest_kind == "queue" else vhost.exchanges).get(
            d.destination)
        if source is None or dest is None:
            continue
        b = Binding(source, dest, d.routing_key, d.arguments)
        source.add(b)
    for (owner, name), stored in recovered.messages.items():
        q = vhost.queues.get(name)
        if owner != vhost.name or q is None:
            continue
        for sm in stored:
            q.restore(sm.seq, sm.message, sm.ttl, now)
