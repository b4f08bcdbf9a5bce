"""Handlers of the broker-wide resources: overview, whoami, nodes, vhosts, users,
permissions, connections, channels, consumers, definitions, health checks, aliveness."""
from __future__ import annotations

import os
import time

from .. import __version__, definitions, errors, passwords
from ..adminviews import NODE
from ..exchanges import EXCHANGE_TYPES
from ..message import Message
from ..queues.base import ACK
from .app import (JSON, Context, Created, HTTPError, admin_only, as_json, bad_request, dumps,
                  not_found)
from .server import Response

STARTED = time.monotonic()


def overview(ctx: Context) -> dict:
    doc = ctx.admin.overview()
    cfg = ctx.broker.config
    doc.update({
        "management_version": definitions.RABBIT_VERSION, "rates_mode": "basic",
        "cluster_name": cfg.server.cluster_name,
        "exchange_types": [{"name": t, "description": "", "enabled": True}
                           for t in EXCHANGE_TYPES],
        "listeners": [{"node": NODE, "protocol": proto, "ip_address": host, "port": port}
                      for proto, host, port in getattr(ctx.broker, "listeners", ())],
        "statistics_db_event_queue": 0, "disable_stats": False, "enable_queue_totals": False})
    return doc


def whoami(ctx: Context) -> dict:
    return as_json({"name": ctx.user.name, "tags": list(ctx.admin.tags)})


def _rss() -> int:
    """The process's resident memory in bytes (Linux), else 0: RabbitMQ's mem_used."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _node(ctx: Context) -> dict:
    return {"name": NODE, "type": "disc", "running": True, "version": __version__,
            "mem_used": _rss(), "queued_bytes": ctx.broker.queued_bytes(),
            "mem_alarm": bool(ctx.broker.memory_alarm), "disk_free_alarm": False,
            "uptime": int((time.monotonic() - STARTED) * 1000), "partitions": [],
            "os_pid": str(os.getpid()), "being_drained": False}


def nodes(ctx: Context) -> list:
    _monitor(ctx)
    return [_node(ctx)]


def node(ctx: Context, name: str) -> dict:
    _monitor(ctx)
    if name != NODE:
        raise not_found()
    return _node(ctx)


def _monitor(ctx: Context) -> None:
    if not {"administrator", "monitoring"} & set(ctx.admin.tags):
        raise HTTPError(401, "not_authorised", "Not monitor user")


# ---------------------------------------------------------------------- vhosts

def vhosts(ctx: Context) -> list:
    return ctx.admin.vhosts()


def vhost(ctx: Context, vhost: str) -> dict:
    admin_only(ctx)   # RabbitMQ 3.10: one vhost is for administrators, the list for all
    return ctx.admin.vhost(vhost)


def put_vhost(ctx: Context, vhost: str):
    """As RabbitMQ, whoever creates a vhost gets every permission on it."""
    ctx.body()
    if not ctx.admin.add_vhost(vhost):
        return None
    ctx.admin.set_permissions(vhost, ctx.user.name, ".*", ".*", ".*")
    return Created()


def delete_vhost(ctx: Context, vhost: str) -> None:
    ctx.admin.delete_vhost(vhost)


def vhost_permissions(ctx: Context, vhost: str) -> list:
    ctx.admin.find_vhost(vhost)
    return ctx.admin.permissions(vhost=vhost)


# ---------------------------------------------------------------------- users

def users(ctx: Context) -> list:
    return [{**u, "limits": {}} for u in ctx.admin.users()]


def user(ctx: Context, name: str) -> dict:
    for u in ctx.admin.users():
        if u["name"] == name:
            return {**u, "limits": {}}
    raise not_found()


def put_user(ctx: Context, name: str):
    body = ctx.body()
    tags = body.get("tags", "")
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise bad_request("tags: expected a list or a comma-separated string")
    password, password_hash = body.get("password"), body.get("password_hash")
    algo = body.get("hashing_algorithm", passwords.SHA256)
    if password_hash is not None:
        if algo not in passwords.ALGORITHMS:
            raise bad_request(f"unsupported hashing algorithm {algo!r} (one of "
                              f"{', '.join(passwords.ALGORITHMS)})")
        if password_hash != "" and not (isinstance(password_hash, str) and
                                        passwords.is_hash(password_hash, algo)):
            raise bad_request(f"password_hash: expected base64 of a salt and a digest of "
                              f"{algo}")
    elif password is not None and not isinstance(password, str):
        raise bad_request("password: expected a string")
    created = ctx.admin.put_user(name, password, password_hash or None, tuple(tags),
                                 algo if password_hash else passwords.SHA256)
    return Created() if created else None


def delete_user(ctx: Context, name: str) -> None:
    ctx.admin.delete_user(name)


def user_permissions(ctx: Context, name: str) -> list:
    admin_only(ctx)
    if name not in ctx.broker.users:
        raise not_found()
    return ctx.admin.permissions(user=name)


# ---------------------------------------------------------------------- permissions

def permissions(ctx: Context) -> list:
    return ctx.admin.permissions()


def permission(ctx: Context, vhost: str, user: str) -> dict:
    found = ctx.admin.permissions(vhost=vhost, user=user)
    if not found:
        raise not_found()
    return found[0]


def put_permission(ctx: Context, vhost: str, user: str):
    admin_only(ctx)
    body = ctx.body()
    missing = [k for k in ("configure", "write", "read") if not isinstance(body.get(k), str)]
    if missing:
        raise bad_request(f"[{', '.join(missing)}] are required")
    if vhost not in ctx.broker.vhosts or user not in ctx.broker.users:
        raise bad_request("vhost_or_user_not_found")
    created = ctx.admin.set_permissions(vhost, user, body["configure"], body["write"],
                                        body["read"])
    return Created() if created else None


def delete_permission(ctx: Context, vhost: str, user: str) -> None:
    ctx.admin.clear_permissions(vhost, user)


# ---------------------------------------------------------------------- connections

def connections(ctx: Context) -> list:
    return ctx.admin.connections()


def vhost_connections(ctx: Context, vhost: str) -> list:
    ctx.admin.find_vhost(vhost)
    return [c for c in ctx.admin.connections() if c["vhost"] == vhost]


def connection(ctx: Context, name: str) -> dict:
    return ctx.admin.connection(name)


def close_connection(ctx: Context, name: str) -> None:
    reason = ctx.request.headers.get("x-reason") or "Closed via management plugin"
    ctx.admin.close_connection(name, reason)


def connection_channels(ctx: Context, name: str) -> list:
    return ctx.admin.channels(name)


def channels(ctx: Context) -> list:
    return ctx.admin.channels()


def channel(ctx: Context, name: str) -> dict:
    for ch in ctx.admin.channels():
        if ch["name"] == name:
            return ch
    raise not_found()


def consumers(ctx: Context, vhost: str | None = None) -> list:
    if vhost is not None:
        ctx.admin.find_vhost(vhost)
    return ctx.admin.consumers(vhost)


# ---------------------------------------------------------------------- definitions

def get_definitions(ctx: Context, vhost: str | None = None):
    return as_json(ctx.admin.export_definitions(vhost))


def post_definitions(ctx: Context, vhost: str | None = None) -> None:
    body = ctx.body()
    try:
        ctx.admin.import_definitions(body, vhost)
    except definitions.DefinitionsError as e:
        raise bad_request(str(e)) from None


# ---------------------------------------------------------------------- health

def alarms(ctx: Context):
    if ctx.broker.memory_alarm:
        return _failed("There are alarms in effect in the cluster",
                       [{"node": NODE, "resource": "memory"}])
    return as_json({"status": "ok"})


def _failed(reason: str, alarms: list | None = None, **more) -> Response:
    doc = {"status": "failed", "reason": reason, **more}
    if alarms is not None:
        doc["alarms"] = alarms
    return Response(503, dumps(doc), content_type=JSON)


def port_listener(ctx: Context, port: str):
    if not port.isdigit():
        raise bad_request("Invalid port")
    ports = list(dict.fromkeys(p for _proto, _host, p in ctx.broker.listeners))
    if int(port) not in ports:
        return _failed("No active listener", missing=int(port), ports=ports)
    return as_json({"status": "ok", "port": int(port)})


_PROTOCOLS = {"amqp": "amqp", "amqp091": "amqp", "amqp0-9-1": "amqp", "amqp0.9.1": "amqp",
              "amqps": "amqp/ssl", "amqp/ssl": "amqp/ssl", "http": "http", "https": "https"}


def protocol_listener(ctx: Context, protocol: str):
    protocols = list(dict.fromkeys(proto for proto, _h, _p in ctx.broker.listeners))
    wanted = _PROTOCOLS.get(protocol.lower(), protocol)
    if wanted not in protocols:
        return _failed("No active listener", missing=protocol, protocols=protocols)
    return as_json({"status": "ok", "protocol": wanted})


def single_node(ctx: Context):
    """node-is-quorum-critical, node-is-mirror-sync-critical: there is one node."""
    return as_json({"status": "ok", "reason": "single node cluster"})


def virtual_hosts(ctx: Context):
    return as_json({"status": "ok"})


def aliveness(ctx: Context, vhost: str):
    """As RabbitMQ: declare the ``aliveness-test`` queue, publish to it and get it back."""
    admin = ctx.admin
    admin.declare_queue(vhost, "aliveness-test", durable=False)
    admin.publish(vhost, "", Message("", "aliveness-test", b"\x00\x00", b"test_message"))
    got = admin.get_messages(vhost, "aliveness-test", 1, ACK)
    if not got or got[0][0].body != b"test_message":
        raise errors.InternalError("aliveness test failed")
    return as_json({"status": "ok"})
