"""Dead-lettering's message side: the x-death history RabbitMQ writes on a dead letter,
and its cycle rule.  Where dead letters go (the DLX's routing) is dlx.py's; the queue
decides when a message dies (its ``dead_letter`` callback, see classic.py)."""
from __future__ import annotations

import time

from ..message import (F_EXPIRATION, F_HEADERS, Message, array_items, set_headers,
                       split_properties, table_items, v_array, v_decode, v_long, v_str,
                       v_table, v_timestamp)
from .args import QueueArgs


def with_death(queue: str, args: QueueArgs, msg: Message, reason: str):
    """The dead letter of ``msg`` (dead in ``queue`` for ``reason``) with the x-death
    history and x-first/last-death headers RabbitMQ writes; and that history as (queue,
    reason) pairs, newest first, for the cycle check."""
    parts = split_properties(msg.props)
    headers = table_items(parts[F_HEADERS]) if F_HEADERS in parts else []
    hmap = dict(headers)
    deaths = array_items(hmap["x-death"]) if hmap.get("x-death", b"")[:1] == b"A" else []
    found = None
    rest = []
    for d in deaths:
        items = table_items(d[1:]) if d[:1] == b"F" else []
        fields = {k: v_decode(v) for k, v in items}
        if found is None and fields.get("queue") == queue and \
                fields.get("reason") == reason:
            count = fields.get("count") or 0
            found = v_table([(k, v_long(count + 1) if k == "count" else v)
                             for k, v in items])
        else:
            rest.append(d)
    if found is None:
        entry = [("count", v_long(1)), ("reason", v_str(reason)),
                 ("queue", v_str(queue)), ("time", v_timestamp(int(time.time()))),
                 ("exchange", v_str(msg.exchange)),
                 ("routing-keys", v_array([v_str(k) for k in
                                           (msg.routing_key, *msg.cc)]))]
        if F_EXPIRATION in parts:
            raw = parts[F_EXPIRATION]
            entry.insert(0, ("original-expiration", v_str(raw[1:].decode("utf-8", "surrogateescape"))))
        found = v_table(entry)
    deaths = [found] + rest
    changes = {"x-death": v_array(deaths),
               "x-last-death-queue": v_str(queue),
               "x-last-death-reason": v_str(reason),
               "x-last-death-exchange": v_str(msg.exchange)}
    if "x-first-death-queue" not in hmap:
        changes["x-first-death-queue"] = v_str(queue)
        changes["x-first-death-reason"] = v_str(reason)
        changes["x-first-death-exchange"] = v_str(msg.exchange)
    cc = msg.cc
    if args.dlrk is not None:
        changes["CC"] = None  # a fixed dead-letter routing key drops CC
        cc = ()
    changes["BCC"] = None
    props = set_headers(msg.props, changes, remove_props=(F_EXPIRATION,), sort_keys=True)
    history = []
    for d in deaths:
        if d[:1] != b"F":
            continue  # junk in a client-sent x-death: kept as is, not history
        fields = {k: v_decode(v) for k, v in table_items(d[1:])}
        history.append((fields.get("queue"), fields.get("reason")))
    new = msg.with_props(props, exchange=args.dlx,
                         routing_key=args.dlrk if args.dlrk is not None
                         else msg.routing_key, cc=cc)
    return new, history


def is_cycle(queue: str, history: list[tuple]) -> bool:
    """RabbitMQ drops a dead letter that would re-enter a queue already in its x-death
    history, unless a rejection happened somewhere along that cycle."""
    for q, reason in history:
        if reason == "rejected":
            return False
        if q == queue:
            return True
    return False
