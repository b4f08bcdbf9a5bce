"""The management API's JSON shapes (RabbitMQ's field names) of queues, exchanges,
bindings, connections and channels: what ``admin.Admin`` returns, one function per kind."""
from __future__ import annotations

from . import metrics
from .definitions import json_value
from .exchanges import Exchange

NODE = "amqpbroker"  # RabbitMQ's "node" fields: there is one


def connection_name(conn) -> str:
    """RabbitMQ's: "peer host:port -> local host:port"."""
    p, lo = conn.transport.peer, conn.transport.local
    return f"{p[0]}:{p[1]} -> {lo[0]}:{lo[1]}"


def user_name(conn) -> str | None:
    return conn.user.name if conn.user is not None else None


def queue_info(vhost: str, q) -> dict:
    st = q.stats()
    owner = q.exclusive_owner
    return {
        "name": q.name, "vhost": vhost, "durable": q.durable, "auto_delete": q.auto_delete,
        "exclusive": owner is not None, "arguments": json_value(dict(q.arguments)),
        "type": q.args.queue_type, "state": "running", "node": NODE,
        "owner_pid_details": {"name": connection_name(owner)} if owner is not None else {},
        "messages": st.messages + st.unacked, "messages_ready": st.messages,
        "messages_unacknowledged": st.unacked, "message_bytes_ready": st.message_bytes,
        "consumers": st.consumers, "message_stats": metrics.message_stats(q.counters),
        "policy": q.policy.name if q.policy is not None else None,
        "operator_policy": q.operator_policy.name if q.operator_policy is not None else None,
        "effective_policy_definition": _effective(q)}


def _effective(q) -> dict:
    """The applied policies' keys (the operator policy's lower values win)."""
    out = dict(q.policy.definition) if q.policy is not None else {}
    if q.operator_policy is not None:
        for k, v in q.operator_policy.definition.items():
            out[k] = min(v, out[k]) if k in out else v
    return out


def exchange_info(vhost: str, ex) -> dict:
    info = {"name": ex.name, "vhost": vhost, "type": ex.type, "durable": ex.durable,
            "auto_delete": ex.auto_delete, "internal": ex.internal,
            "arguments": json_value(dict(ex.arguments)),
            "message_stats": metrics.message_stats(ex.counters)}
    if not ex.name:
        info["user_who_performed_action"] = "rmq-internal"
    cache = getattr(ex, "cache", None)
    if cache is not None:  # a deduplicating exchange: the plugin's item (no byte count)
        info["cache_info"] = {"entries": len(cache), "size": cache.size}
    if ex.policy is not None:
        info["policy"] = ex.policy.name
    return info


def binding_info(vhost: str, source: str, dest, routing_key: str, arguments) -> dict:
    return {"source": source, "vhost": vhost, "destination": dest.name,
            "destination_type": "exchange" if isinstance(dest, Exchange) else "queue",
            "routing_key": routing_key, "arguments": json_value(dict(arguments))}


def connection_info(conn) -> dict:
    c, t = conn.counters, conn.transport
    return {
        "name": connection_name(conn), "node": NODE, "type": "network",
        "state": "blocked" if conn.blocked else "running", "user": user_name(conn),
        "vhost": conn.vhost.name if conn.vhost is not None else None,
        "peer_host": t.peer[0], "peer_port": t.peer[1], "host": t.local[0],
        "port": t.local[1], "ssl": t.tls, "protocol": "AMQP 0-9-1",
        "channels": len(conn.channels), "channel_max": conn.channel_max,
        "frame_max": conn.frame_max, "timeout": conn.heartbeat,
        "client_properties": json_value(dict(conn.client_properties)),
        "recv_oct": c.recv_oct, "recv_oct_details": {"rate": c.rate("recv_oct")},
        "send_oct": c.send_oct, "send_oct_details": {"rate": c.rate("send_oct")}}


def channel_ref(conn, ch) -> dict:
    name = connection_name(conn)
    return {"name": f"{name} ({ch.number})", "number": ch.number, "connection_name": name,
            "peer_host": conn.transport.peer[0], "peer_port": conn.transport.peer[1],
            "user": user_name(conn)}


def channel_info(conn, ch) -> dict:
    return {**channel_ref(conn, ch), "vhost": conn.vhost.name,
            "consumer_count": len(ch.consumers), "messages_unacknowledged": len(ch.unacked),
            "prefetch_count": ch.prefetch_count, "global_prefetch_count": ch.global_prefetch,
            "confirm": ch.confirms is not None, "transactional": ch.tx is not None,
            "state": "closing" if ch.closing else "running",
            "connection_details": {"name": connection_name(conn),
                                   "peer_host": conn.transport.peer[0],
                                   "peer_port": conn.transport.peer[1]},
            "message_stats": metrics.message_stats(ch.counters)}
