"""Content assembly: a Basic.Publish method frame, its content header and its body frames
become one ``Message`` (the hot path: one body frame, no copy); frames out of order are the
errors RabbitMQ names.  A mixin of ``channel.Channel``; its state is set there."""
from __future__ import annotations

from . import errors, wirecheck
from .framing import Publish, Settle
from .message import Message


class ContentAssembly:
    # ------------------------------------------------------------------ frames in

    def handle_method(self, method) -> None:
        if self._publish is not None:  # RabbitMQ names the publish, not this method
            raise wirecheck.unexpected(self._publish, self._props)
        if type(method) is Publish:
            if method.immediate:
                raise errors.NotImplemented_("immediate=true", 60, 40)
            self._publish = method
            return
        if type(method) is Settle:
            self._settle(method)
            return
        handler = self._handlers.get(method.name)
        if handler is None:
            raise errors.CommandInvalid(f"unimplemented method {method.name}",
                                        method.index >> 16, method.index & 0xFFFF)
        try:
            handler(method)
        except errors.AMQPError as e:
            if not e.class_id:
                e.class_id, e.method_id = method.index >> 16, method.index & 0xFFFF
            raise

    def handle_header(self, payload: bytes) -> None:
        if self._publish is None or self._props is not None:
            if len(payload) < 12:  # RabbitMQ's analyze_frame comes before its assembler
                raise wirecheck.unknown_frame(2, payload)
            raise wirecheck.unexpected(self._publish, self._props)
        # 505 for another class, 502 for malformed properties; flags user-id/delivery-mode
        size, props, self._check = wirecheck.content_header(payload)
        limit = self.conn.config.limits.max_message_size
        if size > limit:
            self._publish = None
            raise errors.PreconditionFailed(
                f"message size {size} is larger than configured max size {limit}", 60, 40)
        self._props, self._size = props, size
        self._header = payload
        if size == 0:
            self._complete(b"")

    def handle_body(self, payload: bytes) -> None:
        if self._props is None:
            raise wirecheck.unexpected(self._publish, self._props)
        if len(payload) == self._size and not self._parts:  # the usual single body frame
            pub, props = self._publish, self._props
            self._publish = self._props = None
            msg = Message(pub.exchange, pub.routing_key, props, payload)
            if pub.route_ss:  # what every Basic.Deliver of it repeats, as received
                msg.route_ss, msg.header = pub.route_ss, self._header
            self._do_publish(pub, msg)
            return
        self._received += len(payload)
        if self._received > self._size:
            raise errors.FrameError("content body frame exceeds remaining content size", 60, 40)
        if self._received == self._size:
            if self._parts:
                self.conn.hold(len(payload) - self._received)  # the held parts are let go
                self._parts.append(payload)
                body = b"".join(self._parts)
                self._parts = []
            else:
                body = payload
            self._complete(body)
        else:
            self._parts.append(payload)
            self.conn.hold(len(payload))  # 530 past limits.max_buffered_bytes

    def _complete(self, body: bytes) -> None:
        pub, props = self._publish, self._props
        self._publish = self._props = None
        self._received = 0
        self._do_publish(pub, Message(pub.exchange, pub.routing_key, props, body))
