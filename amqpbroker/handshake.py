"""Channel 0 of a connection: the handshake (Start, Start-Ok with the login of auth.py,
Tune-Ok, Open), the client's Close, Update-Secret, and Connection.Blocked.  A mixin of
``Connection`` (connection.py), whose state it reads and sets."""
from __future__ import annotations

import platform

from pamqp import commands as C

from . import __version__, auth, errors, framing, heartbeat

# states
AWAIT_HEADER, AWAIT_START_OK, AWAIT_TUNE_OK, AWAIT_OPEN, OPEN, CLOSING, CLOSED = range(7)


CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}


class Handshake:
    def _start(self) -> None:
        props = {
            "product": self.config.server.product,
            "version": __version__,
            "platform": f"Python {platform.python_version()}",
            "copyright": "amqpbroker contributors",
            "information": "An AMQP 0-9-1 broker in Python",
            "cluster_name": self.config.server.cluster_name,
            "capabilities": CAPABILITIES,
        }
        self.send(framing.method_frame(0, C.Connection.Start(
            version_major=0, version_minor=9, server_properties=props,
            mechanisms=auth.offered(self.transport, self.config.auth_mechanisms),
            locales="en_US")))
        self.state = AWAIT_START_OK

    def _connection_method(self, m, now: float) -> None:
        name = m.name
        if name == "Connection.Close":
            self.send(framing.method_frame(0, C.Connection.CloseOk()))
            self._teardown()
            self.should_close = True
            # RabbitMQ: until the client closes, at most min(heartbeat, 30 s)
            self.linger = float(min(self.heartbeat, 30) if self.heartbeat else 30)
            self.state = CLOSED
            return
        if name == "Connection.CloseOk":
            if self.state == CLOSING:
                self._abort()
            return
        if self.state == CLOSING:
            return
        if self.state == AWAIT_START_OK and name == "Connection.StartOk":
            self._start_ok(m)
        elif self.state == AWAIT_TUNE_OK and name == "Connection.TuneOk":
            self._tune_ok(m, now)
        elif self.state == AWAIT_OPEN and name == "Connection.Open":
            limit = self.config.limits.max_connections
            if limit and len(self.broker.connections) >= limit:
                raise errors.NotAllowed(f"connection limit ({limit}) is reached", 10, 40)
            self.vhost, self.permissions = self.broker.open_vhost(self.user, m.virtual_host)
            self.topic_permissions = self.broker.topic_permissions.get(
                (self.user.name, m.virtual_host))
            self.state = OPEN
            self.broker.connections.add(self)
            self.vhost.counters.connections_opened += 1
            self.send(framing.method_frame(0, C.Connection.OpenOk()))
        elif self.state == OPEN and name == "Connection.UpdateSecret":
            # PLAIN/AMQPLAIN logins have no token to refresh: accept, as RabbitMQ's
            # internal backend does
            self.send(framing.method_frame(0, C.Connection.UpdateSecretOk()))
        else:
            # RabbitMQ's text names its reader state, not the method
            state = {AWAIT_START_OK: "starting", AWAIT_TUNE_OK: "tuning",
                     AWAIT_OPEN: "opening"}.get(self.state, "running")
            raise errors.ChannelError(
                f"unexpected method in connection state {state}",
                m.index >> 16, m.index & 0xFFFF)

    def _start_ok(self, m) -> None:
        self.client_properties = m.client_properties or {}
        caps = self.client_properties.get("capabilities")
        self.client_caps = caps if isinstance(caps, dict) else {}
        response = m.response if isinstance(m.response, bytes) else \
            (m.response or "").encode("utf-8", "surrogateescape")
        user = auth.login(self.broker, m.mechanism, response, self.transport,
                          bool(self.client_caps.get("authentication_failure_close")))
        if user is None:
            self.should_close = True   # old clients: close the socket silently
            self.state = CLOSED
            return
        self.user = user
        limits = self.config.limits
        self.send(framing.method_frame(0, C.Connection.Tune(
            channel_max=limits.channel_max, frame_max=limits.frame_max,
            heartbeat=limits.heartbeat)))
        self.state = AWAIT_TUNE_OK

    def _tune_ok(self, m, now: float) -> None:
        limits = self.config.limits
        for field, value, ours in (("channel_max", m.channel_max, limits.channel_max),
                                   ("frame_max", m.frame_max, limits.frame_max)):
            if ours and (value == 0 or value > ours):
                raise errors.NotAllowed(
                    f"negotiated {field} = {value} is higher than the maximum allowed value "
                    f"({ours})", 10, 31)
        if 0 < m.frame_max < framing.FRAME_MIN_SIZE:
            raise errors.NotAllowed(
                f"negotiated frame_max = {m.frame_max} is lower than the minimum allowed "
                f"value ({framing.FRAME_MIN_SIZE})", 10, 31)
        self.channel_max = m.channel_max or limits.channel_max or 65535
        self.frame_max = m.frame_max or limits.frame_max
        self.reader.frame_max = self.frame_max
        self.heartbeat = m.heartbeat  # the server uses the client's value as is
        self.heartbeats = heartbeat.Monitor(m.heartbeat, now) if m.heartbeat else None
        self.state = AWAIT_OPEN

    def became_publisher(self) -> None:
        """The first publish: from now on resource alarms apply to this connection."""
        self.publisher = True
        if self.broker.memory_alarm:
            self.set_blocked("low on memory")

    def set_blocked(self, reason: str | None) -> None:
        """Resource alarm: Connection.Blocked / Unblocked, sent only to clients that
        advertised the ``connection.blocked`` capability; while blocked the connection is
        not read (TCP backpressure), as RabbitMQ does."""
        blocked = reason is not None
        if blocked == self.blocked or self.state != OPEN:
            return
        self.blocked = blocked
        if self.client_caps.get("connection.blocked"):
            method = C.Connection.Blocked(reason=reason) if blocked else \
                C.Connection.Unblocked()
            self.send(framing.method_frame(0, method))
