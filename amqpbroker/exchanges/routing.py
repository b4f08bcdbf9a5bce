"""Routing one message: ``route(vhost, exchange, msg, keys) -> Route``.  Each exchange's
type sees the whole message (LavinMQ's publish hook); exchange-to-exchange bindings are
followed (cycles tolerated), then the alternate exchanges of an exchange that routed the
message nowhere.  A ``DEFERRED`` or ``DROPPED`` outcome counts as routed: no alternate
exchange is tried for it."""
from __future__ import annotations

from .base import DEFERRED, DROPPED, Exchange, Outcome, Route
from .filtered import Filtered, MessageView


def route(vhost, exchange: Exchange, msg, keys=None) -> Route:
    """Every queue ``msg`` reaches from ``exchange``, once each.  ``keys``: the routing
    keys (the routing key, plus CC and BCC, by default).  ``vhost.exchanges`` names the
    alternate exchanges."""
    if keys is None:
        keys = (msg.routing_key,) if not (msg.cc or msg.bcc) else msg.routing_keys
    if not exchange.e2e and len(keys) == 1:
        # the usual case: one key, no exchange-to-exchange bindings, so nothing to follow
        # and no repeats to remove (a type gives each destination once for one key)
        found = exchange.route(msg, keys)
        if found.__class__ is Outcome:
            return Route.taken((), found.ticket if found.ticket is not None else False,
                               found is DROPPED)
        if found:
            return Route(found)
        return _alternate(vhost, exchange, msg, keys)
    return _walk(vhost, exchange, msg, keys, None)


def _walk(vhost, exchange: Exchange, msg, keys, ae_chain: set | None,
          view: MessageView | None = None) -> Route:
    """``view``: what filter policies read of ``msg``, built when a filtered binding is
    first met and kept for the alternate exchanges' walk."""
    queues: dict[int, object] = {}
    deferred = dropped = False
    visited: set[int] = set()
    pending = [exchange]
    while pending:
        ex = pending.pop()
        if id(ex) in visited:
            continue
        visited.add(id(ex))
        found = ex.route(msg, keys)
        if found.__class__ is Outcome:
            t = found.ticket
            if t is not None:  # deferred: keep every deferring exchange's ticket
                deferred = t if deferred is False else [
                    *(deferred if type(deferred) is list else (deferred,)), t]
            dropped |= found is DROPPED
            continue
        for dest in found:
            if dest.__class__ is Filtered:
                if view is None:
                    view = MessageView(msg)
                if not view.matches(dest):
                    continue
                dest = dest.destination
            if isinstance(dest, Exchange):
                pending.append(dest)
            else:
                queues[id(dest)] = dest
    if deferred or dropped:
        return Route.taken(queues.values(), deferred, dropped)
    if queues:
        return Route(queues.values())
    return _alternate(vhost, exchange, msg, keys, ae_chain, view)


def _alternate(vhost, exchange: Exchange, msg, keys, ae_chain: set | None = None,
               view: MessageView | None = None) -> Route:
    """``exchange`` routed the message nowhere: its alternate exchange, if any (and that
    one's, without going round a cycle)."""
    ae_name = exchange.alternate_exchange
    if ae_name is None:
        return Route()
    ae = vhost.exchanges.get(ae_name)
    if ae_chain is None:
        ae_chain = set()
    ae_chain.add(id(exchange))
    if ae is None or id(ae) in ae_chain:
        return Route()
    return _walk(vhost, ae, msg, keys, ae_chain, view)
