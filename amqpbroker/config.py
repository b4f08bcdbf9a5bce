"""Configuration: strict YAML loading into configschema.py's frozen dataclasses (which
are re-exported here: ``config.Config``, ``config.Limits``, ...).

``Config()`` is a working development config, the same values as ``conf/broker.yaml``.
Unknown keys, wrong types and bad values are rejected with one line naming the file, the
dotted key path and what was expected, e.g.
``conf/broker.yaml: limits.frame_max: expected an integer >= 4096, got 12``.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import re
import typing

from . import configcross, limits, passwords, yamlfile
from .configcross import _is_host, check_hosts, check_listen, check_management, check_regex
from .configerrors import ConfigError, StartError, show as _show
from .configschema import (TLS, BindingDefinition, Config, Definitions, ExchangeDefinition,
                           Limits, Listen, Management, ManagementTLS, Permission,
                           Prometheus, QueueDefinition, Server, Storage, TopicPermission,
                           User, VHost, VHostSpec)
from .exchanges import EXCHANGE_TYPES

__all__ = ["ConfigError", "StartError", "load", "from_dict", "replace", "check_hosts",
           "check_listen", "check_management", "SHORTSTR", "MAX_VALUES",
           # the schema (configschema.py), for callers of config.Config and the like
           "Config", "Server", "Listen", "TLS", "Management", "ManagementTLS", "Prometheus",
           "Limits",
           "Storage", "User", "Permission", "VHost", "TopicPermission", "check_regex",
           "Definitions", "ExchangeDefinition", "QueueDefinition", "BindingDefinition"]


SHORTSTR = 255  # bytes: names, routing keys and table keys are AMQP short strings


def _check_text(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigError(f"{path}: expected text that UTF-8 can encode, got {_show(value)} "
                          f"(character {e.start + 1} is {value[e.start]!r})") from None


_INT64 = (-(1 << 63), (1 << 63) - 1)


MAX_VALUES = 10000  # in one arguments table, nested values included (YAML aliases multiply)


def _check_argument(value: typing.Any, path: str, depth: int, budget: list) -> None:
    """An argument value must be one RabbitMQ's definitions can hold and the store can
    keep: text, a boolean, a 64-bit integer, a finite number, null, or a list or mapping
    of those (no YAML dates, timestamps or binary)."""
    if depth > 16:
        raise ConfigError(f"{path}: expected at most 16 levels of nesting")
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{path}: expected at most {MAX_VALUES} values in one table")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ConfigError(f"{path}: expected a 64-bit signed integer, got {_show(value)}")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_argument(item, f"{path}[{i}]", depth + 1, budget)
        return
    if isinstance(value, dict):
        _check_table(value, path, depth + 1, budget)
        return
    kind = {datetime.date: "a date", datetime.datetime: "a timestamp", bytes: "binary data",
            set: "a set"}.get(type(value), type(value).__name__)
    raise ConfigError(f"{path}: expected a string, number, boolean, null, list or mapping, "
                      f"got {kind} ({_show(value)})")


def _check_table(value: dict, path: str, depth: int = 0, budget: list | None = None) -> None:
    budget = [MAX_VALUES] if budget is None else budget
    for key, item in value.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: expected a mapping with string keys, got the key "
                              f"{_show(key)}")
        sub = f"{path}.{key}"
        _check_text(key, sub)
        if not key or len(key.encode()) > SHORTSTR:
            raise ConfigError(f"{sub}: expected a key of 1..{SHORTSTR} bytes, got "
                              f"{len(key.encode())} bytes")
        _check_argument(item, sub, depth, budget)


def _nbytes(text: str, least: int) -> bool:
    return least <= len(text.encode("utf-8")) <= SHORTSTR


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
    "limits.max_buffered_bytes": (lambda v: v >= 0, "an integer >= 0 (0: no cap)"),
    "users[].hashing_algorithm": (lambda v: v in passwords.ALGORITHMS,
                                  "one of " + ", ".join(passwords.ALGORITHMS)),
    "server.log_level": (lambda v: v in ("debug", "info", "warning", "error"),
                         "one of debug, info, warning, error"),
    "storage.backend": (lambda v: v in ("memory", "sqlite"), "one of memory, sqlite"),
    # the registered exchange types (a callable text: a type registered later is listed)
    "type": (lambda v: v in EXCHANGE_TYPES, lambda: "one of " + ", ".join(EXCHANGE_TYPES)),
    "destination_type": (lambda v: v in ("queue", "exchange"), "one of queue, exchange"),
    "listen.hosts[]": (_is_host, "an IP address or a host name"),
    "listen.tls.port": (lambda v: 0 <= v <= 65535, "an integer 0..65535"),
    "listen.tls.certfile": (lambda v: v != "" and "\0" not in v, "a file path"),
    "listen.tls.keyfile": (lambda v: v != "" and "\0" not in v, "a file path"),
    "listen.tls.cafile": (lambda v: v != "" and "\0" not in v, "a file path"),
    "listen.tls.verify": (lambda v: v in ("none", "peer", "require"),
                          "one of none, peer, require"),
    "listen.tls.min_version": (lambda v: v in ("tlsv1.2", "tlsv1.3"),
                               "one of tlsv1.2, tlsv1.3"),
    "management.port": (lambda v: 0 <= v <= 65535, "an integer 0..65535"),
    "management.hosts[]": (_is_host, "an IP address or a host name"),
    "prometheus.port": (lambda v: 0 <= v <= 65535, "an integer 0..65535"),
    "prometheus.hosts[]": (_is_host, "an IP address or a host name"),
    "storage.path": (lambda v: v != "" and "\0" not in v, "a directory path"),
    "auth_mechanisms[]": (lambda v: v in ("PLAIN", "AMQPLAIN", "EXTERNAL", "ANONYMOUS"),
                          "one of PLAIN, AMQPLAIN, EXTERNAL, ANONYMOUS"),
    "ssl_cert_login_from": (lambda v: v in ("distinguished_name", "common_name"),
                            "one of distinguished_name, common_name"),
    "vhosts[]": (lambda v: _nbytes(v, 1), f"a vhost name of 1..{SHORTSTR} bytes"),
    "topic_permissions[].exchange": (lambda v: _nbytes(v, 1),
                                     f"an exchange name of 1..{SHORTSTR} bytes"),
    "vhosts[].name": (lambda v: _nbytes(v, 1), f"a vhost name of 1..{SHORTSTR} bytes"),
    "users[].name": (lambda v: _nbytes(v, 1), f"a user name of 1..{SHORTSTR} bytes"),
    "definitions.exchanges[].name": (lambda v: _nbytes(v, 1),
                                     f"an exchange name of 1..{SHORTSTR} bytes"),
    "definitions.queues[].name": (lambda v: _nbytes(v, 1),
                                  f"a queue name of 1..{SHORTSTR} bytes"),
    "definitions.bindings[].source": (lambda v: _nbytes(v, 0),
                                      f"an exchange name of 0..{SHORTSTR} bytes"),
    "definitions.bindings[].destination": (lambda v: _nbytes(v, 1),
                                           f"a name of 1..{SHORTSTR} bytes"),
    "definitions.bindings[].routing_key": (lambda v: _nbytes(v, 0),
                                           f"a routing key of 0..{SHORTSTR} bytes"),
}

# management.tls has listen.tls's keys and rules
_CHECKS.update({"management." + k[len("listen."):]: v for k, v in list(_CHECKS.items())
                if k.startswith("listen.tls.")})


check_arguments = _check_table  # (table, path): what definitions and the HTTP API take


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
            hint = " ([] for none)" if value is None else ""
            raise ConfigError(f"{path}: expected a list, got {_show(value)}{hint}")
        return tuple(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is VHost:  # a name, or {name, limits}
        if not isinstance(value, dict):
            return VHost(_convert(value, str, path))
        spec = _build(VHostSpec, value, path)
        return VHost(spec.name, _limits(spec.limits, f"{path}.limits", limits.VHOST_KEYS))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is dict:  # AMQP arguments: a mapping with string keys
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{path}: expected a mapping with string keys, got "
                              f"{_show(value)}")
        _check_table(value, path)
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
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_show(value)}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    if tp is str:
        _check_text(value, path)
    check = _CHECKS.get(path) or _CHECKS.get(re.sub(r"\[\d+\]", "[]", path)) or (
        _CHECKS.get(path.rsplit(".", 1)[-1]) if path.startswith("definitions.") else None)
    if check and not check[0](value):
        text = check[1]() if callable(check[1]) else check[1]
        raise ConfigError(f"{path}: expected {text}, got {_show(value)}")
    return value


def _build(cls: type, data: typing.Any, path: str) -> typing.Any:
    where = f"{path}: " if path else ""
    if data is None and path and not path.endswith("]"):
        data = {}  # a section whose keys are all commented out: its defaults
    if not isinstance(data, dict):
        raise ConfigError(f"{where}expected a mapping, got {_show(data)}")
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


def _limits(value: dict, path: str, keys: tuple[str, ...]) -> dict:
    try:
        return limits.parse(value, keys)
    except limits.LimitError as e:
        raise ConfigError(f"{path}{'.' + e.key if e.key else ''}: {e}") from None


def from_dict(data: typing.Any, lines: dict | None = None) -> Config:
    """Validate parsed YAML; ``lines`` (key path -> line, from yamlfile) lets a duplicate
    name the lines of both."""
    lines = lines or {}
    if data is None:
        return Config()
    cfg = _build(Config, data, "")
    configcross.check(cfg, data, lines)
    return cfg


def load(path: str) -> Config:
    """Load and validate a YAML file; every error message starts with the file name."""
    try:
        data, lines = yamlfile.read(path)
        try:
            return from_dict(data, lines)
        except RecursionError:  # a structure that contains itself (through an alias)
            raise ConfigError("a value contains itself (a YAML alias to its own "
                              "anchor)") from None
    except (yamlfile.YAMLFileError, ConfigError) as e:
        raise ConfigError(f"{path}: {e}") from None


def replace(cfg: Config, **sections: dict) -> Config:
    """Return ``cfg`` with some fields of some sections replaced (command-line overrides)."""
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v)
                                       for k, v in sections.items() if v})
