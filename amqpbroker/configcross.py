"""The configuration's cross-field checks (config.py calls ``check`` once the YAML is
built into the dataclasses): hosts, listeners, duplicates, users and their hashes and
limits, permissions and topic permissions, mechanisms, definitions and policies.  Each
failure is one ConfigError naming the key path."""
from __future__ import annotations

import ipaddress
import re
import typing

from . import limits, passwords, policies
from .configerrors import ConfigError, show as _show
from .configschema import Config, Listen, Management

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


def check(cfg: Config, data: dict, lines: dict) -> None:
    """Everything that spans keys; ``data``: the YAML as read (what it left out)."""
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


def _limits(value: dict, path: str, keys: tuple[str, ...]) -> dict:
    try:
        return limits.parse(value, keys)
    except limits.LimitError as e:
        raise ConfigError(f"{path}{'.' + e.key if e.key else ''}: {e}") from None
