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
import ipaddress
import math
import re
import typing

from . import limits, passwords, policies, yamlfile
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


class ConfigError(ValueError):
    pass


class StartError(ConfigError):
    """A value that fails only when the broker starts (a host that cannot be bound, a port
    in use, a data directory it cannot use, a corrupt store).  ``key`` is the dotted key
    path (``listen.hosts[0]``, ``listen.port``, ``storage.path``); the command line names
    the flag instead when the value came from one."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _show(value: typing.Any, limit: int = 60) -> str:
    """repr() cut to one short line: a message names the value, it does not dump it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


SHORTSTR = 255  # bytes: names, routing keys and table keys are AMQP short strings
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _is_host(text: str) -> bool:
    """An IP address, or a name that could resolve (whether it does depends on the
    machine: that is found at start)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", text):  # looks like IPv4 but is not one (999.1.1.1)
        return False
    return len(text) <= 253 and _HOSTNAME.fullmatch(text) is not None


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


def _duplicates(items: typing.Iterable, path: str, what: str, lines: dict, key: str = "") -> None:
    """Refuse the second of two equal items of a list (``path[i]`` or ``path[i].key``)."""
    first: dict = {}
    for i, item in enumerate(items):
        here = f"{path}[{i}]{key}"
        if item not in first:
            first[item] = i
            continue
        j = first[item]
        there = f"{path}[{j}]{key}"
        shown = repr(item) if isinstance(item, str) else \
            f"for user {item[0]!r} on vhost {item[1]!r}" + \
            (f" and exchange {item[2]!r}" if len(item) > 2 else "")
        if here in lines and there in lines:
            where = f" at line {lines[here]} (first at line {lines[there]})"
        else:
            where = f" (first {there})"
        raise ConfigError(f"{here}: duplicate {what} {shown}{where}")


def check_regex(value: str, path: str, as_bytes: bool = False) -> None:
    """A permission's pattern compiles (before {username} is expanded, as RabbitMQ's)."""
    try:
        re.compile(value.encode("utf-8", "surrogateescape") if as_bytes else value)
    except (re.error, UnicodeEncodeError) as e:
        raise ConfigError(f"{path}: expected a regular expression, got {value!r} ({e})") \
            from None


def check_hosts(hosts: tuple[str, ...], path: str, lines: dict | None = None) -> None:
    """listen.hosts (or --host): at least one, each an address or a name, no repeats
    (a second listener on the same address and port could never bind)."""
    if not hosts:
        raise ConfigError(f"{path}: expected at least one host")
    flag = path.startswith("--")  # the command line: no index to name
    for i, host in enumerate(hosts):
        if not _is_host(host):
            raise ConfigError(f"{path if flag else f'{path}[{i}]'}: expected an IP address "
                              f"or a host name, got {_show(host)}")
        if flag and host in hosts[:i]:
            raise ConfigError(f"{path}: duplicate host {host!r}")
    _duplicates(hosts, path, "host", lines or {})


def check_listen(listen: Listen, port_key: str = "listen.port") -> None:
    """A ``port`` of null turns a listener off, but one of them must stay on."""
    if listen.port is None and (listen.tls is None or listen.tls.port is None):
        raise ConfigError(f"{port_key}: expected an integer, got None (null turns the "
                          f"plain listener off only when listen.tls listens)")
    if listen.tls is not None and listen.tls.port is not None and \
            listen.tls.port == listen.port and listen.port != 0:
        raise ConfigError(f"listen.tls.port: expected a port other than listen.port, got "
                          f"{listen.tls.port}")
    if listen.tls is not None and listen.tls.verify != "none" and listen.tls.cafile is None:
        raise ConfigError(f"listen.tls.cafile: expected a CA file to check client "
                          f"certificates against (verify is {listen.tls.verify})")


def check_management(m: Management) -> None:
    """As check_listen, but both listeners may be off (no management API at all)."""
    if m.tls is not None and m.tls.port is not None and m.tls.port == m.port and m.port != 0:
        raise ConfigError(f"management.tls.port: expected a port other than management.port, "
                          f"got {m.tls.port}")
    if m.tls is not None and m.tls.verify != "none" and m.tls.cafile is None:
        raise ConfigError(f"management.tls.cafile: expected a CA file to check client "
                          f"certificates against (verify is {m.tls.verify})")


def from_dict(data: typing.Any, lines: dict | None = None) -> Config:
    """Validate parsed YAML; ``lines`` (key path -> line, from yamlfile) lets a duplicate
    name the lines of both."""
    lines = lines or {}
    if data is None:
        return Config()
    cfg = _build(Config, data, "")
    check_hosts(cfg.listen.hosts, "listen.hosts", lines)
    check_listen(cfg.listen)
    check_hosts(cfg.management.hosts, "management.hosts", lines)
    check_hosts(cfg.prometheus.hosts, "prometheus.hosts", lines)
    check_management(cfg.management)
    _duplicates(cfg.vhosts, "vhosts", "vhost", lines)
    _duplicates([u.name for u in cfg.users], "users", "user", lines, ".name")
    _duplicates([(p.user, p.vhost) for p in cfg.permissions], "permissions",
                "permission", lines)
    for i, u in enumerate(cfg.users):
        _limits(u.limits, f"users[{i}].limits", limits.USER_KEYS)
        if u.password_hash is not None and not passwords.is_hash(u.password_hash,
                                                                 u.hashing_algorithm):
            digest = u.hashing_algorithm.rsplit("_", 1)[-1].upper().replace("SHA", "SHA-")
            raise ConfigError(f"users[{i}].password_hash: expected base64 of a 4-byte salt and "
                              f"a {digest} digest, got {u.password_hash!r}")
    lim = cfg.limits
    if 0 < lim.max_buffered_bytes < max(lim.max_message_size, lim.frame_max):
        raise ConfigError(f"limits.max_buffered_bytes: expected 0 or at least max_message_size "
                          f"and frame_max ({max(lim.max_message_size, lim.frame_max)}), got "
                          f"{lim.max_buffered_bytes}")
    names = {u.name for u in cfg.users}
    if "permissions" not in data and cfg.permissions and (
            cfg.permissions[0].user not in names or cfg.permissions[0].vhost not in cfg.vhosts):
        raise ConfigError("permissions: not set, and the default (user 'guest' on vhost '/') "
                          "names a user or vhost this file does not have; set permissions "
                          "([] for none)")
    for i, p in enumerate(cfg.permissions):
        if p.user not in names:
            raise ConfigError(f"permissions[{i}].user: expected one of the users, got {p.user!r}")
        if p.vhost not in cfg.vhosts:
            raise ConfigError(f"permissions[{i}].vhost: expected one of the vhosts, got {p.vhost!r}")
        for key in ("configure", "write", "read"):
            check_regex(getattr(p, key), f"permissions[{i}].{key}")
    for i, p in enumerate(cfg.topic_permissions):
        if p.user not in names or p.vhost not in cfg.vhosts:
            key, value = ("user", p.user) if p.user not in names else ("vhost", p.vhost)
            raise ConfigError(f"topic_permissions[{i}].{key}: expected one of the {key}s, "
                              f"got {value!r}")
        check_regex(p.write, f"topic_permissions[{i}].write", as_bytes=True)
        check_regex(p.read, f"topic_permissions[{i}].read", as_bytes=True)
    _duplicates([(p.user, p.vhost, p.exchange) for p in cfg.topic_permissions],
                "topic_permissions", "topic permission", lines)
    _duplicates(cfg.auth_mechanisms, "auth_mechanisms", "mechanism", lines)
    if not cfg.auth_mechanisms:
        raise ConfigError("auth_mechanisms: expected at least one mechanism, got []")
    if "ANONYMOUS" in cfg.auth_mechanisms and cfg.anonymous_login_user not in names:
        raise ConfigError(f"anonymous_login_user: expected one of the users (ANONYMOUS is in "
                          f"auth_mechanisms), got {cfg.anonymous_login_user!r}")
    d = cfg.definitions
    for kind, items in (("exchanges", d.exchanges), ("queues", d.queues),
                        ("bindings", d.bindings), ("policies", d.policies),
                        ("operator_policies", d.operator_policies)):
        for i, item in enumerate(items):
            if item.vhost not in cfg.vhosts:
                raise ConfigError(f"definitions.{kind}[{i}].vhost: expected one of the vhosts, "
                                  f"got {item.vhost!r}")
            if kind.endswith("policies"):
                try:
                    policies.make(item.vhost, item.name, item.pattern, item.definition,
                                  item.priority, item.apply_to, kind == "operator_policies")
                except policies.PolicyError as e:
                    raise ConfigError(f"definitions.{kind}[{i}]: {e}") from None
        if kind.endswith("policies"):  # (a name is per vhost, and names one policy)
            seen = {}
            for i, p in enumerate(items):
                j = seen.setdefault((p.vhost, p.name), i)
                if j != i:
                    raise ConfigError(f"definitions.{kind}[{i}].name: duplicate policy "
                                      f"{p.name!r} in vhost {p.vhost!r} (first "
                                      f"definitions.{kind}[{j}])")
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
