"""Definitions in RabbitMQ's JSON shape (``GET/POST /api/definitions``): users, vhosts,
permissions, topic permissions, exchanges, queues and bindings, as plain dicts (the caller
does the JSON).

Export lists what a client declared: not the built-in ``amq.*`` exchanges nor the default
exchange, not exclusive queues (they belong to a connection), not the default exchange's
implicit bindings.  A per-vhost export leaves out users, vhosts and permissions and the
``vhost`` keys, as RabbitMQ's.

Import declares as a client would, through the vhost (same validation, same texts; an
existing entity must be equivalent), in order: vhosts, users, permissions, topic
permissions, policies, exchanges, queues, bindings.  A full import creates the vhosts it
lists (``Broker.add_vhost``, as RabbitMQ's); an item naming a vhost that neither exists
nor is listed is refused before anything changes.  Vhosts, users and (topic) permissions
go into the running broker only (the configuration file stays the source at start)."""
from __future__ import annotations

import re

import base64
import os
from decimal import Decimal

from . import __version__, errors, limits, passwords, policies
from .config import ConfigError, Permission, TopicPermission, User, check_regex
from .exchanges import Exchange
from .passwords import hash_password

RABBIT_VERSION = "3.10.0"   # the format written (RabbitMQ 3.x reads it)
HASHING = passwords.SHA256   # of plain-text passwords from the configuration file
VHOST_LIMITS = "vhost-limits"  # the runtime parameter component RabbitMQ keeps them in


class DefinitionsError(ValueError):
    """An import refused, naming the item: "queues[2]: inequivalent arg 'durable' ..."."""


def json_value(value):
    """A field-table value as RabbitMQ's management API shows it in JSON."""
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return float(value)
    return value


def password_hash(user) -> str:
    """The user's hash as RabbitMQ stores it (a plain-text password from the config file
    is hashed with a fresh salt)."""
    if user.password_hash:
        return user.password_hash
    if user.password is None:
        return ""
    return hash_password(user.password, os.urandom(4))


def hashing_algorithm(user) -> str:
    return user.hashing_algorithm if user.password_hash else HASHING


# ---------------------------------------------------------------------- export

def export(broker, vhost: str | None = None) -> dict:
    names = sorted(broker.vhosts) if vhost is None else [vhost]
    out: dict = {"rabbit_version": RABBIT_VERSION, "rabbitmq_version": RABBIT_VERSION,
                 "product_name": "amqpbroker", "product_version": __version__}
    if vhost is None:
        out["users"] = [{"name": u.name, "password_hash": password_hash(u),
                         "hashing_algorithm": hashing_algorithm(u), "tags": list(u.tags),
                         "limits": dict(u.limits)}
                        for _n, u in sorted(broker.users.items())]
        # vhost limits as RabbitMQ writes them: pairs in vhosts[], and (what its import
        # reads) a vhost-limits parameter
        out["vhosts"] = [{"name": n, "limits": [list(kv) for kv in broker.vhosts[n].limits
                                                .items()], "metadata": {}} for n in names]
        out["permissions"] = [
            {"user": u, "vhost": v, "configure": p.patterns[0], "write": p.patterns[1],
             "read": p.patterns[2]} for (u, v), p in sorted(broker.permissions.items())]
        out["topic_permissions"] = topic_permissions(broker)
        for key in ("global_parameters",):
            out[key] = []
        out["parameters"] = [{"vhost": n, "component": VHOST_LIMITS, "name": "limits",
                              "value": dict(broker.vhosts[n].limits)}
                             for n in names if broker.vhosts[n].limits]
    local = (lambda d: {k: v for k, v in d.items() if k != "vhost"}) if vhost is not None \
        else (lambda d: d)  # a per-vhost export names no vhost
    out["policies"] = [local(d) for n in names for d in broker.vhosts[n].policies.export()]
    ops = [local(d) for n in names for d in broker.vhosts[n].policies.export(operator=True)]
    if ops:  # (RabbitMQ's export has no such key; its import ignores it)
        out["operator_policies"] = ops
    queues, exchanges, bindings = [], [], []
    for name in names:
        vh = broker.vhosts[name]
        where = {} if vhost is not None else {"vhost": name}
        for q in sorted(vh.queues.values(), key=lambda q: q.name):
            if q.exclusive_owner is None:
                queues.append({"name": q.name, **where, "durable": q.durable,
                               "auto_delete": q.auto_delete,
                               "arguments": json_value(dict(q.arguments))})
        for ex in sorted(vh.exchanges.values(), key=lambda e: e.name):
            if ex.name.startswith("amq."):
                continue
            exchanges.append({"name": ex.name, **where, "type": ex.type,
                              "durable": ex.durable, "auto_delete": ex.auto_delete,
                              "internal": ex.internal,
                              "arguments": json_value(dict(ex.arguments))})
        for ex in sorted(vh.exchanges.values(), key=lambda e: e.name):
            for b in ex.bindings.values():
                dest = b.destination
                if getattr(dest, "exclusive_owner", None) is not None:
                    continue
                bindings.append({
                    "source": ex.name, **where, "destination": dest.name,
                    "destination_type": "exchange" if isinstance(dest, Exchange) else "queue",
                    "routing_key": b.routing_key, "arguments": json_value(dict(b.arguments))})
    out.update(queues=queues, exchanges=exchanges, bindings=bindings)
    return out


def topic_permissions(broker) -> list[dict]:
    """As ``rabbitmqctl export_definitions`` lists them (the patterns as set)."""
    return [{"user": u, "vhost": v, "exchange": x, "write": w, "read": r}
            for (u, v), tp in sorted(broker.topic_permissions.items())
            for x, (w, r) in sorted(tp.patterns.items())]


# ---------------------------------------------------------------------- import

def apply(broker, defs: dict, vhost: str | None = None) -> None:
    """Import ``defs`` (``vhost``: items without a ``vhost`` key go there; a per-vhost
    import takes only topology).  Raises DefinitionsError naming the first bad item; what
    came before it stays (as RabbitMQ)."""
    if not isinstance(defs, dict):
        raise DefinitionsError("definitions: not an object")
    default = vhost if vhost is not None else "/"
    listed = set()
    if vhost is None:
        for i, item in enumerate(_items(defs, "vhosts")):
            name = item.get("name")
            if not isinstance(name, str) or not 1 <= len(name.encode("utf-8", "replace")) \
                    <= 255:
                raise DefinitionsError(f"vhosts[{i}]: expected a name of 1..255 bytes")
            listed.add(name)
    for key in ("queues", "exchanges", "bindings", "permissions", "topic_permissions",
                "policies", "operator_policies"):
        for i, item in enumerate(_items(defs, key)):
            name = item.get("vhost", default)
            if name not in broker.vhosts and name not in listed:
                raise DefinitionsError(
                    f"{key}[{i}]: vhost '{name}' does not exist (nor is it in vhosts)")
    for name in sorted(listed):
        broker.add_vhost(name)
    path = ""
    try:
        if vhost is None:
            vhost_limits = _vhost_limits(defs, broker.vhosts)
            for i, u in enumerate(_items(defs, "users")):
                path = f"users[{i}]"
                broker.users[u["name"]] = _user(u, broker.users.get(u["name"]), path,
                                                defs.get("rabbit_version"))
            for name, lim in vhost_limits.items():  # before the queues, as RabbitMQ
                broker.vhosts[name].limits = lim
            for i, p in enumerate(_items(defs, "permissions")):
                path = f"permissions[{i}]"
                perm = Permission(p["user"], p.get("vhost", "/"), p.get("configure", ""),
                                  p.get("write", ""), p.get("read", ""))
                broker.set_permissions(perm)
            for i, p in enumerate(_items(defs, "topic_permissions")):
                path = f"topic_permissions[{i}]"
                broker.set_topic_permissions(_topic_permission(broker, p, path))
        for kind in ("policies", "operator_policies"):  # before the topology they shape
            for i, p in enumerate(_items(defs, kind)):
                path = f"{kind}[{i}]"
                broker.set_policy(p.get("vhost", default), p["name"], p["pattern"],
                                  p["definition"], p.get("priority", 0),
                                  p.get("apply-to", "all"), kind == "operator_policies")
        for i, x in enumerate(_items(defs, "exchanges")):
            path = f"exchanges[{i}]"
            broker.vhosts[x.get("vhost", default)].declare_exchange(
                x["name"], x.get("type", "direct"), False, bool(x.get("durable", True)),
                bool(x.get("auto_delete", False)), bool(x.get("internal", False)),
                dict(x.get("arguments") or {}))
        for i, q in enumerate(_items(defs, "queues")):
            path = f"queues[{i}]"
            broker.vhosts[q.get("vhost", default)].declare_queue(
                q["name"], False, bool(q.get("durable", True)), False,
                bool(q.get("auto_delete", False)), dict(q.get("arguments") or {}), None)
        for i, b in enumerate(_items(defs, "bindings")):
            path = f"bindings[{i}]"
            vh = broker.vhosts[b.get("vhost", default)]
            kind = b.get("destination_type", "queue")
            if kind not in ("queue", "exchange"):
                raise DefinitionsError(f"{path}: unknown destination_type {kind!r}")
            dest = vh.get_queue(b["destination"]) if kind == "queue" \
                else vh.get_exchange(b["destination"])
            vh.bind(b["source"], dest, b.get("routing_key", ""),
                    dict(b.get("arguments") or {}))
    except errors.AMQPError as e:
        raise DefinitionsError(f"{path}: {e.explanation or e.reply_text}") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise DefinitionsError(f"{path}: malformed ({type(e).__name__}: {e})") from None
    except re.error as e:  # a permission's pattern
        raise DefinitionsError(f"{path}: invalid regular expression ({e})") from None
    except policies.PolicyError as e:
        raise DefinitionsError(f"{path}: {e}") from None


def _items(defs: dict, key: str) -> list:
    items = defs.get(key) or []
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise DefinitionsError(f"{key}: not a list of objects")
    return items


def _topic_permission(broker, p: dict, path: str) -> TopicPermission:
    """The fields ``rabbitmqctl export_definitions`` writes, all of them required (as
    RabbitMQ's set_topic_permissions): user, vhost, exchange, write, read."""
    tp = TopicPermission(p["user"], p["exchange"], p["write"], p["read"], p["vhost"])
    if not all(isinstance(v, str) for v in (tp.user, tp.exchange, tp.write, tp.read)):
        raise DefinitionsError(f"{path}: user, exchange, write and read must be strings")
    if tp.user not in broker.users:
        raise DefinitionsError(f"{path}: no user '{tp.user}'")
    for key in ("write", "read"):
        try:
            check_regex(getattr(tp, key), f"{path}.{key}", as_bytes=True)
        except ConfigError as e:
            raise DefinitionsError(str(e)) from None
    return tp


def _limits(value, keys: tuple[str, ...], path: str) -> dict:
    try:
        return limits.parse(value, keys)
    except limits.LimitError as e:
        raise DefinitionsError(f"{path}{'.' + e.key if e.key else ''}: {e}") from None


def _vhost_limits(defs: dict, vhosts: dict) -> dict:
    """vhost -> limits: RabbitMQ's import reads the vhost-limits parameters; the pairs it
    writes in vhosts[].limits are read too (a parameter wins).  Other parameters are
    ignored."""
    out = {}
    for i, v in enumerate(_items(defs, "vhosts")):
        if v.get("limits"):
            out[v["name"]] = _limits(v["limits"], limits.VHOST_KEYS, f"vhosts[{i}].limits")
    for i, p in enumerate(_items(defs, "parameters")):
        if p.get("component") == VHOST_LIMITS:
            name = p.get("vhost", "/")
            if name not in vhosts:
                raise DefinitionsError(f"parameters[{i}]: vhost '{name}' is not configured "
                                       "(vhosts come from the configuration file)")
            out[name] = _limits(p.get("value"), limits.VHOST_KEYS, f"parameters[{i}].value")
    return out


def _user(u: dict, old, path: str, version=None) -> User:
    tags = u.get("tags", [])
    if isinstance(tags, str):  # RabbitMQ before 3.9: "administrator,monitoring"
        tags = [t for t in tags.split(",") if t]
    keep = {"tags": tuple(tags), "loopback_only": old.loopback_only if old else False,
            "limits": _limits(u.get("limits"), limits.USER_KEYS, f"{path}.limits")}
    if "password" in u:
        return User(u["name"], password=u["password"], **keep)
    algorithm = u.get("hashing_algorithm") or passwords.default_algorithm(version)
    if algorithm not in passwords.ALGORITHMS:
        raise DefinitionsError(f"{path}: hashing algorithm '{algorithm}' is not supported "
                               f"(expected one of {', '.join(passwords.ALGORITHMS)})")
    return User(u["name"], password_hash=u.get("password_hash") or None,
                hashing_algorithm=algorithm, **keep)
