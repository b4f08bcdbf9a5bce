"""Configuration: frozen dataclasses with working defaults, strict YAML loading.

``Config()`` is a working development config, the same values as ``conf/broker.yaml``.
Unknown keys, wrong types and bad values are rejected with one line naming the file, the
dotted key path and what was expected, e.g.
``conf/broker.yaml: limits.frame_max: expected an integer >= 4096, got 12``.
"""
from __future__ import annotations

import base64
import dataclasses
import re
import typing
from dataclasses import dataclass, field

import yaml


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Listen:
    hosts: tuple[str, ...] = ("127.0.0.1", "::1")  # IPv4 and IPv6 loopback: some clients use [::1]
    port: int = 5672


@dataclass(frozen=True)
class Limits:
    frame_max: int = 131072      # RabbitMQ's proposals; smaller client values win
    channel_max: int = 2047
    heartbeat: int = 60          # seconds; 0 disables
    # RabbitMQ 3.x's default (4.x lowered it to 16 MiB): clients' own test suites send
    # 20+ MB messages, and a broker that refuses them is not a drop-in replacement
    max_message_size: int = 128 * 1024 * 1024
    max_connections: int = 0     # 0 = unlimited
    # memory alarm, as RabbitMQ's vm_memory_high_watermark: when the messages held in
    # queues need more than this (a fraction of the machine's RAM; 0 disables), publishing
    # connections are blocked (Connection.Blocked, their sockets are not read) until the
    # consumers have drained the queues below it
    memory_high_watermark: float = 0.4
    memory_high_watermark_bytes: int = 0  # an absolute limit instead, when > 0


@dataclass(frozen=True)
class Server:
    product: str = "amqpbroker"  # some clients branch on "RabbitMQ"; settable on purpose
    cluster_name: str = "amqpbroker"
    log_level: str = "info"


@dataclass(frozen=True)
class Storage:
    backend: str = "sqlite"  # sqlite: durable (WAL, group commit); memory: nothing survives
    path: str = "./data"


@dataclass(frozen=True)
class User:
    name: str
    password: str | None = None       # plain text, for development
    password_hash: str | None = None  # RabbitMQ-compatible base64(salt4 + sha256(salt4 + pw))
    tags: tuple[str, ...] = ()
    loopback_only: bool = False


@dataclass(frozen=True)
class Permission:
    user: str
    vhost: str = "/"
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


@dataclass(frozen=True)
class ExchangeDefinition:
    name: str
    type: str = "direct"
    vhost: str = "/"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QueueDefinition:
    name: str
    vhost: str = "/"
    durable: bool = True
    auto_delete: bool = False
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BindingDefinition:
    source: str
    destination: str
    destination_type: str = "queue"
    routing_key: str = ""
    vhost: str = "/"
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Definitions:
    """Exchanges, queues and bindings declared at start (after recovery), as a client
    would declare them: an existing entity must be equivalent."""

    exchanges: tuple[ExchangeDefinition, ...] = ()
    queues: tuple[QueueDefinition, ...] = ()
    bindings: tuple[BindingDefinition, ...] = ()


@dataclass(frozen=True)
class Config:
    server: Server = field(default_factory=Server)
    listen: Listen = field(default_factory=Listen)
    limits: Limits = field(default_factory=Limits)
    storage: Storage = field(default_factory=Storage)
    vhosts: tuple[str, ...] = ("/",)
    users: tuple[User, ...] = (User("guest", password="guest", tags=("administrator",),
                                    loopback_only=True),)
    permissions: tuple[Permission, ...] = (Permission("guest", "/"),)
    definitions: Definitions = field(default_factory=Definitions)


# value checks beyond the type: key path suffix -> (predicate, expectation)
_CHECKS: dict[str, tuple[typing.Callable[[typing.Any], bool], str]] = {
    "listen.port": (lambda v: 0 <= v <= 65535, "an integer 0..65535"),
    "limits.frame_max": (lambda v: 4096 <= v <= 1 << 31, "an integer >= 4096"),
    "limits.channel_max": (lambda v: 1 <= v <= 65535, "an integer 1..65535"),
    "limits.heartbeat": (lambda v: 0 <= v <= 65535, "an integer 0..65535 (seconds)"),
    "limits.max_message_size": (lambda v: 1 <= v <= 512 * 1024 * 1024, "an integer 1..536870912"),
    "limits.max_connections": (lambda v: v >= 0, "an integer >= 0"),
    "limits.memory_high_watermark": (lambda v: 0 <= v <= 1,
                                     "a fraction of the RAM between 0 and 1 (0 disables)"),
    "limits.memory_high_watermark_bytes": (lambda v: v >= 0, "an integer >= 0"),
    "server.log_level": (lambda v: v in ("debug", "info", "warning", "error"),
                         "one of debug, info, warning, error"),
    "storage.backend": (lambda v: v in ("memory", "sqlite"), "one of memory, sqlite"),
    "type": (lambda v: v in ("direct", "fanout", "topic", "headers"),
             "one of direct, fanout, topic, headers"),
    "destination_type": (lambda v: v in ("queue", "exchange"), "one of queue, exchange"),
}


def _type_name(tp: typing.Any) -> str:
    return {int: "an integer", str: "a string", bool: "a boolean",
            float: "a number"}.get(tp, str(tp))


def _convert(value: typing.Any, tp: typing.Any, path: str) -> typing.Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path)
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return tuple(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is dict:  # AMQP arguments: a mapping with string keys
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{path}: expected a mapping with string keys, got {value!r}")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a programming error in the schema
        raise TypeError(tp)
    if not ok:
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    check = _CHECKS.get(path) or (_CHECKS.get(path.rsplit(".", 1)[-1])
                                  if path.startswith("definitions.") else None)
    if check and not check[0](value):
        raise ConfigError(f"{path}: expected {check[1]}, got {value!r}")
    return value


def _build(cls: type, data: typing.Any, path: str) -> typing.Any:
    where = f"{path}: " if path else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(f"{sub}: unknown key (expected one of {', '.join(fields)})")
        kwargs[key] = _convert(value, hints[key], sub)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and \
                f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}.{name}: required key is missing" if path else
                              f"{name}: required key is missing")
    obj = cls(**kwargs)
    if cls is User and obj.password is None and obj.password_hash is None:
        raise ConfigError(f"{path}: expected password or password_hash")
    return obj


def _is_sha256_hash(text: str) -> bool:
    """RabbitMQ's rabbit_password_hashing_sha256 form: base64(salt4 + sha256 digest)."""
    try:
        return len(base64.b64decode(text, validate=True)) == 4 + 32
    except ValueError:
        return False


def from_dict(data: typing.Any) -> Config:
    if data is None:
        return Config()
    cfg = _build(Config, data, "")
    for i, u in enumerate(cfg.users):
        if u.password_hash is not None and not _is_sha256_hash(u.password_hash):
            raise ConfigError(f"users[{i}].password_hash: expected base64 of a 4-byte salt and "
                              f"a SHA-256 digest, got {u.password_hash!r}")
    names = {u.name for u in cfg.users}
    for i, p in enumerate(cfg.permissions):
        if p.user not in names:
            raise ConfigError(f"permissions[{i}].user: expected one of the users, got {p.user!r}")
        if p.vhost not in cfg.vhosts:
            raise ConfigError(f"permissions[{i}].vhost: expected one of the vhosts, got {p.vhost!r}")
        for key in ("configure", "write", "read"):
            value = getattr(p, key)
            try:
                re.compile(value)
            except re.error as e:
                raise ConfigError(f"permissions[{i}].{key}: expected a regular expression, "
                                  f"got {value!r} ({e})") from None
    d = cfg.definitions
    for kind, items in (("exchanges", d.exchanges), ("queues", d.queues),
                        ("bindings", d.bindings)):
        for i, item in enumerate(items):
            if item.vhost not in cfg.vhosts:
                raise ConfigError(f"definitions.{kind}[{i}].vhost: expected one of the vhosts, "
                                  f"got {item.vhost!r}")
    return cfg


def load(path: str) -> Config:
    """Load and validate a YAML file; every error message starts with the file name."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def replace(cfg: Config, **sections: dict) -> Config:
    """Return ``cfg`` with some fields of some sections replaced (command-line overrides)."""
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v)
                                       for k, v in sections.items() if v})
