"""amqps: the standard library's ``ssl`` through anyio, no crypto of our own.

``ServerTLS(tls, key)`` builds the server context from a ``config.TLS`` (a file that
cannot be read or loaded is a StartError naming its key) and rebuilds it on ``reload()``
(SIGHUP): new connections get the new certificate, existing ones keep theirs.
``TLSListener`` wraps a TCP listener: each accepted socket does its TLS handshake within
the AMQP handshake timeout, and a handshake that fails, stalls or is garbage is one log
line and closes that socket only."""
from __future__ import annotations

import logging
import ssl

import anyio
from anyio.abc import Listener, SocketAttribute
from anyio.streams.tls import TLSStream

from .config import TLS, StartError
from .connection import HANDSHAKE_TIMEOUT

log = logging.getLogger("amqpbroker.server")

_VERIFY = {"none": ssl.CERT_NONE, "peer": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}
_VERSIONS = {"tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}


def server_context(tls: TLS, key: str = "listen.tls") -> ssl.SSLContext:
    """The context of one TLS listener; StartError(``<key>.<field>``) for what fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]   # never below TLS 1.2
    for field in ("certfile", "keyfile", "cafile"):
        path = getattr(tls, field)
        if path is not None:
            try:
                open(path, "rb").close()
            except OSError as e:
                raise StartError(f"{key}.{field}", f"cannot read {path}: "
                                                   f"{e.strerror or e}") from None
    try:
        ctx.load_cert_chain(tls.certfile, tls.keyfile, tls.password)
    except ssl.SSLError as e:   # OpenSSL 3 says "PEM lib" for most: look at the files
        raise _blame(tls, key, str(e.reason or e)) from None
    if tls.cafile is not None:
        try:
            ctx.load_verify_locations(tls.cafile)
        except ssl.SSLError as e:
            raise StartError(f"{key}.cafile", f"cannot load {tls.cafile}: "
                                              f"{e.reason or e}") from None
    ctx.verify_mode = _VERIFY[tls.verify]
    if tls.ciphers is not None:
        try:
            ctx.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise StartError(f"{key}.ciphers", f"no cipher matches {tls.ciphers!r}") from None
    return ctx


def _blame(tls: TLS, key: str, reason: str) -> StartError:
    """Which file (or the password) a failed load_cert_chain was about."""
    cert, pem = open(tls.certfile, "rb").read(), open(tls.keyfile, "rb").read()
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        return StartError(f"{key}.certfile", f"{tls.certfile} holds no PEM certificate")
    if b"PRIVATE KEY-----" not in pem:
        return StartError(f"{key}.keyfile", f"{tls.keyfile} holds no PEM private key")
    if b"ENCRYPTED" in pem:
        given = "no password" if tls.password is None else "this password"
        return StartError(f"{key}.password", f"cannot decrypt {tls.keyfile} with {given}")
    if reason == "KEY_VALUES_MISMATCH":
        return StartError(f"{key}.keyfile", f"{tls.keyfile} is not the key of {tls.certfile}")
    return StartError(f"{key}.certfile", f"cannot load {tls.certfile} with {tls.keyfile}: "
                                         f"{reason}")


class ServerTLS:
    """A listener's current context, and its reload."""

    def __init__(self, tls: TLS, key: str = "listen.tls"):
        self.tls, self.key = tls, key
        self.context = server_context(tls, key)

    def reload(self) -> bool:
        """Read the files again; on a mistake log one line and keep the current context."""
        try:
            self.context = server_context(self.tls, self.key)
        except StartError as e:
            log.error("reloading TLS: %s (the previous certificate stays in use)", e)
            return False
        log.info("reloaded the TLS certificate and key of %s", self.key)
        return True


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"no handshake within {HANDSHAKE_TIMEOUT:g} s"
    if isinstance(e, ssl.SSLError):
        return str(e.reason or e.strerror or e)
    if isinstance(e, (anyio.EndOfStream, anyio.BrokenResourceError)):
        return "the peer closed the connection"
    return " ".join(str(e).split()) or type(e).__name__


class TLSListener(Listener):
    """A TCP listener whose streams are TLS streams; the handler gets
    ``(stream, accepted_at)`` so that the TLS handshake counts against the AMQP one."""

    def __init__(self, listener: Listener, server_tls: ServerTLS):
        self.listener, self.server_tls = listener, server_tls

    @property
    def extra_attributes(self):
        return self.listener.extra_attributes

    async def serve(self, handler, task_group=None) -> None:
        async def wrap(stream) -> None:
            accepted = anyio.current_time()
            try:
                peer = stream.extra(SocketAttribute.remote_address)
            except Exception:
                peer = ("?", 0)
            try:
                with anyio.fail_after(HANDSHAKE_TIMEOUT):
                    wrapped = await TLSStream.wrap(stream, server_side=True,
                                                   ssl_context=self.server_tls.context,
                                                   standard_compatible=False)
            except Exception as e:   # one line, this socket only
                log.warning("TLS handshake from %s failed: %s", _peer(peer), _reason(e))
                await anyio.aclose_forcefully(stream)
                return
            await handler(wrapped, accepted)
        await self.listener.serve(wrap, task_group)

    async def aclose(self) -> None:
        await self.listener.aclose()


def _peer(peer) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
