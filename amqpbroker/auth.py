"""Who is connecting: the ``Transport`` a connection came over, and the SASL mechanisms
(PLAIN, AMQPLAIN) in a registry.

A mechanism turns Connection.Start-Ok's response bytes (and the transport, for mechanisms
that log in by certificate) into the user name and the credentials to check; ``login``
checks them against the broker's users.  The mechanisms offered in Connection.Start are
the registry's, in registration order.  Adding one (EXTERNAL, ANONYMOUS) is ``register``."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from . import errors, values

log = logging.getLogger("amqpbroker.auth")


@dataclass(frozen=True)
class Transport:
    """What the listener knows about a connection's socket."""

    peer: tuple = ("127.0.0.1", 0)     # (host, port, ...) as the socket gives it
    local: tuple = ("127.0.0.1", 0)    # our end: which listener it came in on
    tls: bool = False
    peer_certificate: dict | None = None  # ssl's getpeercert() of a verified client

    @property
    def loopback(self) -> bool:
        """From this machine: what the ``loopback_only`` users (guest) need."""
        host = str(self.peer[0]) if self.peer else ""
        return host in ("127.0.0.1", "::1") or host.startswith(("127.", "::ffff:127."))


class Mechanism(Protocol):
    name: str

    def credentials(self, response: bytes, transport: Transport) -> tuple[str, str | None]:
        """(user name, password to check); a password of None is refused (403).  Raises
        an AMQPError for a response the mechanism cannot read."""


MECHANISMS: dict[str, Mechanism] = {}


def register(mechanism: Mechanism) -> None:
    MECHANISMS[mechanism.name] = mechanism


DEFAULT_MECHANISMS = ("PLAIN", "AMQPLAIN")
CERTIFIED = object()   # a mechanism's "password" when the transport proved who it is


def offered(transport: Transport, enabled: tuple = DEFAULT_MECHANISMS) -> str:
    """Connection.Start's ``mechanisms`` (``auth_mechanisms`` in order, space-separated as
    RabbitMQ): EXTERNAL only on TLS connections, certificate or not."""
    return " ".join(n for n in enabled if n in MECHANISMS and
                    (transport.tls or not getattr(MECHANISMS[n], "tls_only", False)))


def _refused(mechanism: str) -> errors.AccessRefusedHard:
    return errors.AccessRefusedHard(f"Login was refused using authentication mechanism "
                                    f"{mechanism}. For details see the broker logfile.")


class Plain:
    """RFC 4616: authzid NUL authcid NUL password (the authzid is ignored, as RabbitMQ)."""

    name = "PLAIN"

    def credentials(self, response: bytes, transport: Transport) -> tuple[str, str | None]:
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise _refused(self.name)
        return values.text(parts[1]), values.text(parts[2])


def _utf8(s: str) -> bool:
    try:
        values.raw(s).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class AMQPlain:
    """RabbitMQ's AMQPLAIN: a field table (without its length prefix) with LOGIN and
    PASSWORD as long strings."""

    name = "AMQPLAIN"

    def credentials(self, response: bytes, transport: Transport) -> tuple[str, str | None]:
        try:
            table, _ = values.decode_table(len(response).to_bytes(4, "big") + response)
        except Exception:  # malformed, or nested past Python's recursion limit
            raise errors.SyntaxError_("AMQPLAIN response is not a field table") from None
        if "LOGIN" not in table or "PASSWORD" not in table:
            raise errors.SyntaxError_("AMQPLAIN response lacks LOGIN or PASSWORD")
        login, password = table["LOGIN"], table["PASSWORD"]
        if table.tags["LOGIN"] != "S" or table.tags["PASSWORD"] != "S" or \
                not _utf8(login) or not _utf8(password):
            return str(login), None  # not text, or invalid UTF-8: refused (403)
        return login, password


# RabbitMQ's short names for the attributes of a subject (rabbit_ssl); others keep ssl's
_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
          "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
          "domainComponent": "DC", "emailAddress": "emailAddress", "serialNumber":
          "serialNumber", "givenName": "GN", "surname": "SN", "title": "title"}


def _escape(v: str) -> str:   # RFC 4514, as RabbitMQ's format_rdn
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in v)
    return ("\\" + out if out[:1] in ("#", " ") else out)


def subject_dn(cert: dict) -> str:
    """The subject as RabbitMQ's ``ssl_cert_login_from = distinguished_name`` gives it:
    the RDNs last to first, ``CN=guest,O=acme``."""
    rdns = ["+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn)
            for rdn in cert.get("subject", ())]
    return ",".join(reversed(rdns))


def common_name(cert: dict) -> str | None:
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


class External:
    """SASL EXTERNAL: the user is named by the client certificate TLS verified (its subject
    DN, or its CN with ``ssl_cert_login_from: common_name``); no certificate, no login."""

    name = "EXTERNAL"
    tls_only = True

    def credentials(self, response: bytes, transport: Transport,
                    config=None) -> tuple[str, object]:
        cert = transport.peer_certificate
        if not cert:
            return "", None   # refused: 403
        how = getattr(config, "ssl_cert_login_from", "distinguished_name")
        name = common_name(cert) if how == "common_name" else subject_dn(cert)
        return (name, CERTIFIED) if name else ("", None)


class Anonymous:
    """SASL ANONYMOUS (RFC 4505): logs in as ``anonymous_login_user`` (off unless listed in
    ``auth_mechanisms``); the response (a trace string) is ignored."""

    name = "ANONYMOUS"

    def credentials(self, response: bytes, transport: Transport,
                    config=None) -> tuple[str, object]:
        user = getattr(config, "anonymous_login_user", None)
        return (user, CERTIFIED) if user else ("", None)


register(Plain())
register(AMQPlain())
register(External())
register(Anonymous())


def login(broker, mechanism: str, response: bytes, transport: Transport,
          failure_close: bool):
    """Connection.Start-Ok: the user, or None when the login is refused and the client did
    not ask for ``authentication_failure_close`` (old clients: their socket is closed
    silently).  Raises AccessRefusedHard (403) when it did, CommandInvalid for a mechanism
    we do not offer, and what the mechanism raises for a response it cannot read."""
    config = getattr(broker, "config", None)
    enabled = getattr(config, "auth_mechanisms", DEFAULT_MECHANISMS)
    mech = MECHANISMS.get(mechanism)
    if mech is None or mechanism not in offered(transport, enabled).split():
        raise errors.CommandInvalid(f"invalid authentication mechanism '{mechanism}'")
    if isinstance(mech, (External, Anonymous)):
        username, password = mech.credentials(response, transport, config)
    else:
        username, password = mech.credentials(response, transport)
    if password is CERTIFIED:
        user = broker.certified(username, transport.loopback)
    else:
        user = None if password is None else broker.authenticate(username, password,
                                                                 transport.loopback)
    if user is None:
        log.warning("login refused for user %r from %s (mechanism %s)", username,
                    transport.peer, mechanism)
        if failure_close:
            raise _refused(mechanism)
    return user
