"""Handlers of exchanges, queues and bindings: list, get, declare (PUT), delete,
publish, purge, get messages, bind and unbind, in RabbitMQ's request and response shapes."""
from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse

from .. import errors
from ..config import ConfigError, check_arguments
from ..message import Message
from ..queues.base import REJECT, REQUEUE
from ..adminviews import queue_info
from . import listing, messages
from .app import Context, Created, as_json, bad_request, not_found

DEFAULT = "amq.default"   # how the API names the default exchange


def _ex(name: str) -> str:
    return "" if name == DEFAULT else name


def _flag(ctx: Context, key: str) -> bool:
    return (ctx.query.get(key) or [""])[-1].lower() == "true"


def _bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise bad_request(f"{key}: expected true or false")
    return value


def _arguments(body: dict) -> dict:
    args = body.get("arguments") or {}
    if not isinstance(args, dict):
        raise bad_request("arguments: expected an object")
    _table(args, "arguments")
    return args


def _table(value: dict, where: str) -> None:
    """What an AMQP table can hold (64-bit integers, finite numbers, keys of 1..255
    bytes, bounded nesting), as the config file's arguments are checked."""
    try:
        check_arguments(value, where)
    except ConfigError as e:
        raise bad_request(str(e)) from None


def _name(kind: str, name: str) -> None:
    """A name the AMQP wire can carry: RabbitMQ's text (its trailing newline too)."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > 255:
        raise bad_request(f"{kind} should be less than 255 bytes, actually was {size}\n")


# ---------------------------------------------------------------------- exchanges

def exchanges(ctx: Context, vhost: str | None = None) -> list:
    return ctx.admin.exchanges(vhost)


def exchange(ctx: Context, vhost: str, name: str) -> dict:
    return ctx.admin.exchange(vhost, _ex(name))


def put_exchange(ctx: Context, vhost: str, name: str):
    body = ctx.body()
    _name("exchange", name)
    vh = ctx.admin.find_vhost(vhost)
    existed = _ex(name) == "" or name in vh.exchanges
    if not isinstance(body.get("type", "direct"), str):
        raise bad_request("type: expected a string")
    ctx.admin.declare_exchange(vhost, name, body.get("type", "direct"),
                               _bool(body, "durable", True), _bool(body, "auto_delete", False),
                               _bool(body, "internal", False), _arguments(body))
    return None if existed else Created()


def delete_exchange(ctx: Context, vhost: str, name: str) -> None:
    ctx.admin.delete_exchange(vhost, _ex(name), _flag(ctx, "if-unused"))


def publish(ctx: Context, vhost: str, name: str):
    body = ctx.body()
    props = body.get("properties", {})
    key = body.get("routing_key")
    if not isinstance(props, dict) or not isinstance(key, str) or \
            not isinstance(body.get("payload"), str):
        raise bad_request("properties, routing_key, payload and payload_encoding are "
                          "required")
    if len(key.encode("utf-8", "surrogateescape")) > 255:   # a consumer could not get it
        raise bad_request("routing_key: expected at most 255 bytes")
    if isinstance(props.get("headers"), dict):
        _table(props["headers"], "properties.headers")
    try:
        raw_props = messages.encode_properties(props)
        data = messages.payload(body["payload"], body.get("payload_encoding", "string"))
    except (ValueError, TypeError) as e:
        raise bad_request(str(e)) from None
    exchange_name = _ex(name)
    try:
        routed = ctx.admin.publish(vhost, exchange_name, Message(exchange_name, key,
                                                                 raw_props, data))
    except errors.NotFound as e:  # RabbitMQ publishes on a channel: its close, in a 400
        raise bad_request(f"{e.code} {e.reply_text}") from None
    return as_json({"routed": routed})


def exchange_bindings(ctx: Context, vhost: str, name: str, direction: str) -> list:
    ctx.admin.exchange(vhost, _ex(name))
    field = "source" if direction == "source" else "destination"
    return [_with_key(b) for b in ctx.admin.bindings(vhost) if b[field] == _ex(name) and
            (field == "source" or b["destination_type"] == "exchange")]


# ---------------------------------------------------------------------- queues

def queues(ctx: Context, vhost: str | None = None):
    return listing.Lazy(ctx.admin.queue_list(vhost), lambda pair: pair[1].name,
                        lambda pair: queue_info(*pair))


def queue(ctx: Context, vhost: str, name: str) -> dict:
    return ctx.admin.queue(vhost, name)


def put_queue(ctx: Context, vhost: str, name: str):
    body = ctx.body()
    _name("queue", name)
    existed = name in ctx.admin.find_vhost(vhost).queues
    ctx.admin.declare_queue(vhost, name, _bool(body, "durable", True),
                            _bool(body, "auto_delete", False), _arguments(body))
    return None if existed else Created()


def delete_queue(ctx: Context, vhost: str, name: str) -> None:
    ctx.admin.delete_queue(vhost, name, _flag(ctx, "if-unused"), _flag(ctx, "if-empty"))


def purge(ctx: Context, vhost: str, name: str) -> None:
    ctx.admin.purge_queue(vhost, name)


ACKMODES = {"ack_requeue_true": REQUEUE, "reject_requeue_true": REQUEUE,
            "ack_requeue_false": None, "reject_requeue_false": REJECT}


def get(ctx: Context, vhost: str, name: str):
    body = ctx.body()
    mode, encoding = body.get("ackmode"), body.get("encoding", "auto")
    count, truncate = body.get("count", 1), body.get("truncate")
    if mode not in ACKMODES:
        raise bad_request(f"ackmode: expected one of {', '.join(ACKMODES)}")
    if encoding not in ("auto", "base64"):
        raise bad_request("encoding: expected auto or base64")
    try:
        count = int(count)
        truncate = None if truncate in (None, "") else int(truncate)
    except (TypeError, ValueError):
        raise bad_request("count and truncate: expected integers") from None
    if truncate is not None and truncate < 0:
        raise bad_request("truncate: expected an integer >= 0")
    got = ctx.admin.get_messages(vhost, name, max(0, count), ACKMODES[mode])
    return as_json([messages.shown(m, red, rem, encoding, truncate) for m, red, rem in got])


def queue_bindings(ctx: Context, vhost: str, name: str) -> list:
    ctx.admin.queue(vhost, name)
    return [_with_key(b) for b in ctx.admin.bindings(vhost)
            if b["destination"] == name and b["destination_type"] == "queue"]


# ---------------------------------------------------------------------- bindings

def properties_key(routing_key: str, arguments: dict) -> str:
    """Names one binding in a URL, as RabbitMQ: the routing key form-encoded ("a.*" is
    "a.%2A", "" is "~"), and a digest of the arguments when there are any (RabbitMQ
    appends its own Erlang term hash: ours differs, so such a key is only meaningful to
    the broker that gave it)."""
    key = urllib.parse.quote_plus(routing_key)
    if not arguments:
        return key or "~"
    digest = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).digest()[:6]
    return f"{key}~{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"


def _with_key(b: dict) -> dict:
    return {**b, "properties_key": properties_key(b["routing_key"], b["arguments"])}


def bindings(ctx: Context, vhost: str | None = None) -> list:
    return [_with_key(b) for b in ctx.admin.bindings(vhost)]


_KIND = {"q": "queue", "e": "exchange"}


def _between(ctx: Context, vhost: str, source: str, kind: str, dest: str) -> list:
    ctx.admin.exchange(vhost, _ex(source))
    if kind not in _KIND:
        raise not_found()
    if kind == "q":
        ctx.admin.queue(vhost, dest)
    else:
        ctx.admin.exchange(vhost, _ex(dest))
    return [_with_key(b) for b in ctx.admin.bindings(vhost) if b["source"] == _ex(source)
            and b["destination"] == _ex(dest) and b["destination_type"] == _KIND[kind]]


def between(ctx: Context, vhost: str, source: str, kind: str, dest: str) -> list:
    return _between(ctx, vhost, source, kind, dest)


def bind(ctx: Context, vhost: str, source: str, kind: str, dest: str):
    body = ctx.body()
    _between(ctx, vhost, source, kind, dest)
    key, args = body.get("routing_key", ""), _arguments(body)
    if not isinstance(key, str):
        raise bad_request("routing_key: expected a string")
    ctx.admin.bind(vhost, _ex(source), dest, _KIND[kind], key, args)
    return Created(f"{urllib.parse.quote(dest, safe='')}/"
                   f"{urllib.parse.quote(properties_key(key, args), safe='~')}")


def _one(ctx, vhost, source, kind, dest, props) -> dict:
    """``props`` as the URL gave it, decoded once: the key itself (what Location holds,
    encoded again) or the routing key it encodes (``a.%2A`` in the URL)."""
    for b in _between(ctx, vhost, source, kind, dest):
        key = b["properties_key"]
        if props in (key, urllib.parse.unquote_plus(key)):
            return b
    raise not_found()


def binding(ctx: Context, vhost: str, source: str, kind: str, dest: str, props: str):
    return _one(ctx, vhost, source, kind, dest, props)


def unbind(ctx: Context, vhost: str, source: str, kind: str, dest: str, props: str) -> None:
    b = _one(ctx, vhost, source, kind, dest, props)
    ctx.admin.unbind(vhost, b["source"], dest, _KIND[kind], b["routing_key"],
                     b["arguments"])
