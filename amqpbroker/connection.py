"""The sans-I/O connection: bytes in (``receive_data``), bytes out (``data_to_send``),
time passed in.  It holds the channel table and the one mapping from errors to
Channel.Close / Connection.Close; channel 0's handshake is handshake.py's and its timers
(heartbeats, the handshake and close deadlines) conntimers.py's (mixins), the login
auth.py's."""
from __future__ import annotations

import logging

from pamqp import commands as C

from . import auth, errors, framefaults, framing, heartbeat, limits, wirecheck
from .channel import Channel
from .conntimers import Timers
from .handshake import AWAIT_HEADER, AWAIT_START_OK, CLOSED, CLOSING, OPEN, Handshake
from .metrics import ConnectionCounters

log = logging.getLogger("amqpbroker.connection")

OUTPUT_HIGH_WATER = 1 << 20   # above this a connection gets no deliveries and is not read
CLOSE_TIMEOUT = 3.0           # how long we wait for Close-Ok before dropping the socket
HANDSHAKE_TIMEOUT = 10.0      # as RabbitMQ's handshake_timeout: open the connection by then


class Connection(Handshake, Timers):
    def __init__(self, broker, transport: auth.Transport = auth.Transport(),
                 now: float = 0.0):
        self.broker = broker
        self.config = broker.config
        self.transport = transport      # peer and local address, TLS: from the listener
        self.peer = transport.peer
        self.state = AWAIT_HEADER
        self.reader = framing.FrameReader()
        self._hdr = b""
        self._out: list[bytes] = []
        self._out_size = 0
        self.output_blocked = False
        self.should_close = False       # flush what is buffered, then close the socket
        # seconds to keep reading (and discarding) after close-ok to the client's close, as
        # RabbitMQ: a client may still be writing frames it queued before its close (amqplib
        # publishes), and closing a socket with unread input resets it (EPIPE there)
        self.linger = 0.0
        self.on_wakeup = None           # called when output appears outside receive_data
        self._in_receive = False
        self._woken = False
        self.channels: dict[int, Channel] = {}
        self.confirms_dirty: set[Channel] = set()
        self.exclusive_queues: dict = {}
        self.client_properties: dict = {}
        self.client_caps: dict = {}
        self.user = None
        self.vhost = None
        self.permissions = None
        self.topic_permissions = None   # access.TopicPermissions, if the user has any
        limits = self.config.limits
        self.channel_max = limits.channel_max
        self.frame_max = limits.frame_max
        self.heartbeat = limits.heartbeat
        self.heartbeats: heartbeat.Monitor | None = None   # from tune-ok, if negotiated
        self.last_recv = now
        self.last_send = now
        self._sent = False  # written since the last tick (heartbeats): a flag, not a count
        self.close_deadline: float | None = None
        self.handshake_deadline = now + HANDSHAKE_TIMEOUT
        self.blocked = False            # by a resource alarm: its socket is not read
        self.publisher = False          # has published: resource alarms block it
        self.counters = ConnectionCounters()
        # content held until routed (partial bodies, uncommitted tx publishes): limits.py
        self.held = 0
        self.max_buffered = self.config.limits.max_buffered_bytes

    # ------------------------------------------------------------------ I/O surface

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size > OUTPUT_HIGH_WATER:
            self.output_blocked = True
        if not self._in_receive and not self._woken and self.on_wakeup is not None:
            self._woken = True
            self.on_wakeup()

    def data_to_send(self, now: float | None = None) -> bytes:
        """Everything buffered for the socket.  ``now``, when given, is the send time (for
        heartbeats); without it the next timer tick counts as the send time."""
        self._woken = False
        if not self._out:
            return b""
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out = []
        self._out_size = 0
        self.counters.send_oct += len(data)
        if data is framing.HEARTBEAT:  # as RabbitMQ's: heartbeats do not count as sent
            pass
        elif now is None:
            self._sent = True
        else:
            self.last_send = now
        if self.output_blocked:
            self.output_blocked = False
            self._resume_deliveries()
        return data

    @property
    def wants_read(self) -> bool:
        """Backpressure: stop reading while our output is piling up."""
        return not self.output_blocked and not self.should_close and not self.blocked

    def _resume_deliveries(self) -> None:
        for ch in list(self.channels.values()):
            ch._redispatch()

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the socket.  Never raises: errors become Close frames."""
        if self.state == CLOSED or self.should_close:
            return
        self.last_recv = now
        self.counters.recv_oct += len(data)
        self._in_receive = True
        try:
            self._receive(data, now)
            if self.held:  # a partial frame alone is bounded by frame_max (<= the cap)
                limits.buffered(self.max_buffered, self.held + self.reader.buffered)
        except errors.AMQPError as e:
            self._fail(e, now)
        except Exception as e:  # a bug of ours: close this connection only, log it
            log.exception("internal error on connection from %s", self.peer)
            self._fail(errors.InternalError(f"{type(e).__name__}: {e}"), now)
        finally:
            self._in_receive = False
            if self.confirms_dirty:
                for ch in self.confirms_dirty:
                    if ch.number in self.channels:
                        ch.flush_confirms()
                self.confirms_dirty.clear()

    def _receive(self, data: bytes, now: float) -> None:
        if self.state == AWAIT_HEADER:
            self._hdr += data
            if len(self._hdr) < 8:
                if not framing.PROTOCOL_HEADER.startswith(self._hdr[:len(self._hdr)]) and \
                        not self._hdr.startswith(b"AMQP"[:len(self._hdr)]):
                    self._bad_header()
                return
            hdr, rest = self._hdr[:8], self._hdr[8:]
            self._hdr = b""
            if hdr != framing.PROTOCOL_HEADER and hdr != b"AMQP\x01\x01\x00\x09":
                self._bad_header()
                return
            self._start()
            data = rest
            if not data:
                return
        self.reader.feed(data)
        channels = self.channels
        hot = framing.HOT_METHODS
        for ftype, channel, payload in self.reader.frames():
            if self.state != OPEN or self.should_close:
                if self.state == CLOSED or self.should_close:
                    return
                self._frame(ftype, channel, payload, now)
                continue
            # the hot path: content frames and the per-message methods of an open channel
            ch = channels.get(channel)
            if ch is None or ch.closing:
                self._frame(ftype, channel, payload, now)
                continue
            try:
                if ftype == 3:
                    ch.handle_body(payload)
                elif ftype == 2:
                    ch.handle_header(payload)
                elif ftype == 1 and payload[2:4] in hot and payload[:2] == b"\x00\x3c":
                    try:
                        method = framing.decode_method(payload)
                    except errors.SyntaxError_:
                        wirecheck.check_method(payload)  # 501 if the fields do not fit
                        raise
                    ch.handle_method(method)
                else:
                    self._frame(ftype, channel, payload, now)
            except errors.SoftError as e:
                self._close_channel(ch, e)

    def hold(self, n: int) -> None:
        """``n`` more (or, negative, fewer) bytes of content held before routing; past
        ``limits.max_buffered_bytes`` the connection is closed (limits.py)."""
        self.held += n
        if n > 0:
            limits.buffered(self.max_buffered, self.held)

    def _bad_header(self) -> None:
        # write our preferred header and close (AMQP 0-9-1 section 4.2.2)
        self.send(framing.PROTOCOL_HEADER)
        self.should_close = True
        self.state = CLOSED

    # ------------------------------------------------------------------ frames

    def _frame(self, ftype: int, channel: int, payload: bytes, now: float) -> None:
        if self.state == CLOSING and (channel or ftype != framing.FRAME_METHOD):
            return  # after sending Connection.Close, discard everything but Close/CloseOk
        if ftype == framing.FRAME_HEARTBEAT:  # RabbitMQ's codes and texts
            if payload:
                raise framefaults.unknown_frame(ftype, payload)
            if channel != 0:
                raise errors.UnexpectedFrame(framefaults.frame_snippet(ftype, payload))
            return
        if ftype > 3 or not ftype or ftype == framing.FRAME_HEADER and len(payload) < 12:
            # RabbitMQ's analyze_frame, before any state: a header without class, weight
            # and body size is 501 on any channel, expected or not
            raise framefaults.unknown_frame(ftype, payload)
        if channel == 0:
            if ftype != framing.FRAME_METHOD:
                raise errors.UnexpectedFrame(framefaults.frame_snippet(ftype, payload))
            wirecheck.check_method(payload)
            self._connection_method(framing.decode_method(payload), now)
            return
        if self.state != OPEN:
            raise errors.ChannelError(f"frame on channel {channel} before connection.open")
        ch = self.channels.get(channel)
        if ftype == framing.FRAME_METHOD:
            wirecheck.check_method(payload)  # 501 for fields that do not fit, 502 tables
            method = framing.decode_method(payload)
            cls = method.index >> 16
            if cls == 10:
                raise errors.CommandInvalid(  # RabbitMQ's text, not naming it
                    "unimplemented method", cls, method.index & 0xFFFF)
            if ch is None:
                self._no_channel_method(channel, method)
                return
            if ch.closing:
                if method.name == "Channel.CloseOk":
                    self._drop_channel(ch)
                elif method.name == "Channel.Close":
                    ch.send_method(C.Channel.CloseOk())
                return
            if cls == 20:
                self._channel_method(ch, method)
                return
            try:
                ch.handle_method(method)
            except errors.SoftError as e:
                self._close_channel(ch, e)
            return
        if ch is None:  # RabbitMQ's content assembly answers first: no method before it
            raise wirecheck.unexpected(None, None)
        if ch.closing:
            return
        try:
            if ftype == framing.FRAME_HEADER:
                ch.handle_header(payload)
            else:
                ch.handle_body(payload)
        except errors.SoftError as e:
            self._close_channel(ch, e)

    def _no_channel_method(self, number: int, method) -> None:
        if method.name == "Channel.Open":
            open_count = len(self.channels)
            # RabbitMQ limits how many channels are open, not their numbers: channel
            # 65535 opens under a channel_max of 2047
            if open_count >= self.channel_max:
                raise errors.NotAllowed(
                    f"number of channels opened ({open_count}) has reached the negotiated "
                    f"channel_max ({self.channel_max})", 20, 10)
            limits.open_channel(self.broker, self.user)
            self.channels[number] = Channel(self, number)
            self.vhost.counters.channels_opened += 1
            self.send(framing.channel_open_ok(number))
        elif method.name == "Channel.CloseOk":
            pass  # a late Close-Ok for a channel already gone
        elif method.name == "Channel.Close":
            # the client may close a channel we never saw opened; be forgiving
            self.send(framing.method_frame(number, C.Channel.CloseOk()))
        else:
            limits.open_channel(self.broker, self.user)  # RabbitMQ's comes first
            raise errors.ChannelError("expected 'channel.open'", method.index >> 16,
                                      method.index & 0xFFFF)

    def _channel_method(self, ch: Channel, method) -> None:
        name = method.name
        if name == "Channel.Open":
            raise errors.ChannelError("second 'channel.open' seen", 20, 10)
        if name == "Channel.Close":
            self._drop_channel(ch)
            ch.send_method(C.Channel.CloseOk())
        elif name == "Channel.CloseOk":
            pass
        else:
            try:
                ch.handle_method(method)
            except errors.SoftError as e:
                self._close_channel(ch, e)

    def _close_channel(self, ch: Channel, e: errors.AMQPError) -> None:
        """A soft error: close this channel only, discard its frames until Close-Ok."""
        log.info("closing channel %d of %s: %s", ch.number, self.peer, e.reply_text)
        ch.release()
        ch.closing = True
        ch.send_method(C.Channel.Close(reply_code=e.code, reply_text=e.reply_text,
                                       class_id=e.class_id, method_id=e.method_id))

    def _drop_channel(self, ch: Channel) -> None:
        self.channels.pop(ch.number, None)
        self.confirms_dirty.discard(ch)
        if not ch.closing:
            ch.release()

    # ------------------------------------------------------------------ errors

    def _fail(self, e: errors.AMQPError, now: float) -> None:
        """Errors that escape a channel close the connection.  Soft errors reach here only
        from channel 0 and become connection errors (e.g. a failed login is 403)."""
        log.info("closing connection %s: %s", self.peer, e.reply_text)
        if self.state in (AWAIT_HEADER, AWAIT_START_OK) and not isinstance(
                e, errors.AccessRefusedHard):
            # nothing but Start has been exchanged: the spec has no error handshake yet
            self._abort()
            return
        self.close(e.code, e.reply_text, e.class_id, e.method_id, now)

    def close(self, code: int, text: str, class_id: int = 0, method_id: int = 0,
              now: float = 0.0) -> None:
        """Start the close handshake from our side (errors, shutdown)."""
        if self.state in (CLOSING, CLOSED):
            return
        self._teardown()
        self.send(framing.method_frame(0, C.Connection.Close(
            reply_code=code, reply_text=text, class_id=class_id, method_id=method_id)))
        self.state = CLOSING
        self.close_deadline = now + CLOSE_TIMEOUT

    def _teardown(self) -> None:
        """Release channels (requeue unacked) and delete exclusive queues.  Idempotent."""
        # each step guarded: a failure in one channel (a bug) must neither stop the others'
        # clean-up nor escape into the server's connection task
        channels, self.channels = list(self.channels.values()), {}
        for ch in channels:
            try:
                if not ch.closing:
                    ch.release()
            except Exception:
                log.exception("releasing channel %d of the connection from %s failed",
                              ch.number, self.peer)
            ch.closing = True
        queues, self.exclusive_queues = list(self.exclusive_queues.values()), {}
        for q in queues:
            try:
                if not q.deleted:
                    self.vhost.delete_queue(q)
            except Exception:
                log.exception("deleting exclusive queue '%s' of the connection from %s failed",
                              q.name, self.peer)
        if self in self.broker.connections:  # (once: teardown is idempotent)
            self.broker.connections.discard(self)
            self.vhost.counters.retire(self.counters)
            self.vhost.counters.connections_closed += 1

    def _abort(self) -> None:
        """Drop the connection now (no close handshake, or none left to wait for)."""
        self._teardown()
        self.should_close = True
        self.state = CLOSED

    def connection_lost(self) -> None:
        """The socket is gone (EOF, reset, heartbeat timeout): clean up synchronously."""
        self._teardown()
        self.state = CLOSED
