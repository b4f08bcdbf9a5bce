"""Ingress validation and frame-level faults over raw sockets, against both brokers.

RabbitMQ's codes and texts are the expectation, except for malformed tables and property
blocks: there we answer 502 SYNTAX_ERROR naming the problem where RabbitMQ 3.10 answers
541 INTERNAL_ERROR or drops the socket (a deliberate difference, see README.md); on both,
nothing malformed is queued.
"""
from __future__ import annotations

import struct
import time

import pytest
from pamqp import commands as C

from raw_support import RawClient, frame, method, publish_frames

ISSUE_PROPS = bytes.fromhex("20000000000401 6b 5a 00".replace(" ", ""))


def ss(b: bytes) -> bytes:
    return bytes((len(b),)) + b


def client(broker) -> RawClient:
    c = RawClient(broker.host, broker.port)
    assert c.handshake() is None
    return c


def message_count(broker, queue: str) -> int | None:
    with client(broker) as c:
        ok = c.rpc(1, C.Queue.Declare(queue=queue, passive=True), "Queue.DeclareOk")
        return None if ok is None else ok.message_count


def delete(broker, queue: str) -> None:
    with client(broker) as c:
        c.rpc(1, C.Queue.Delete(queue=queue), "Queue.DeleteOk")


def declared(broker, c: RawClient, **args) -> str:
    q = broker.name("ingress")
    assert c.rpc(1, C.Queue.Declare(queue=q, arguments=args or None), "Queue.DeclareOk")
    return q


def close_of(c: RawClient, data: bytes, timeout: float = 5.0):
    c.send(data)
    return c.channel_close_reply(timeout=timeout)


def malformed_code(broker) -> int:
    """Ours: 502 naming the problem; RabbitMQ 3.10: 541 (its parser fails)."""
    return 502 if broker.kind == "amqpbroker" else 541


# ---------------------------------------------------------------------- malformed content

def test_issue_reproduction_refused_at_publish_broker_survives(broker):
    with client(broker) as c:
        q = declared(broker, c, **{"x-message-ttl": 300, "x-dead-letter-exchange": ""})
        close = close_of(c, publish_frames(1, ISSUE_PROPS, routing_key=q))
        assert close is not None and close.reply_code == malformed_code(broker)
        if broker.kind == "amqpbroker":
            assert close.reply_text == ("SYNTAX_ERROR - content header: headers.k: unknown "
                                        "field type 'Z'")
    time.sleep(0.6)  # past the TTL: the broker is still there, nothing was queued
    assert message_count(broker, q) == 0
    delete(broker, q)


MALFORMED = {
    "length past the data": b"\x20\x00\x00\x00\x00\x08\x01kS\x00\x00\x00\x09",
    "continued flags": b"\x00\x01\x00\x00",
    "trailing bytes": b"\x00\x00\x01",
    "truncated array": b"\x20\x00\x00\x00\x00\x0e\x01kA\x00\x00\x00\x06S\x00\x00\x00\x05ab",
    "truncated decimal": b"\x20\x00\x00\x00\x00\x06\x01kD\x02\x00\x00",
    "shortstr past the data": b"\x80\x00\x05ab",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_properties_close_the_connection_nothing_queued(broker, case):
    with client(broker) as c:
        q = declared(broker, c)
        close = close_of(c, publish_frames(1, MALFORMED[case], routing_key=q))
        assert close is not None and close.reply_code == malformed_code(broker), \
            close and close.reply_text
    assert message_count(broker, q) == 0
    delete(broker, q)


def test_malformed_declare_arguments_create_nothing(broker):
    """RabbitMQ 3.10 drops the socket without a Close; we answer 502."""
    q = broker.name("ingress")
    args = struct.pack(">I", 4) + b"\x01kZ\x00"
    payload = (b"\x00\x32\x00\x0a\x00\x00" + ss(q.encode()) + b"\x00" + args)
    with client(broker) as c:
        close = close_of(c, frame(1, 1, payload))
        if broker.kind == "amqpbroker":
            assert (close.reply_code, close.reply_text) == (
                502, "SYNTAX_ERROR - Queue.Declare arguments.k: unknown field type 'Z'")
        else:
            assert close is None or close.reply_code == 541
    assert message_count(broker, q) is None


# ---------------------------------------------------------------------- publish checks

@pytest.mark.parametrize("mode", [0, 3])
def test_delivery_mode_outside_1_and_2_is_406(broker, mode):
    with client(broker) as c:
        q = declared(broker, c)
        close = close_of(c, publish_frames(1, b"\x10\x00" + bytes((mode,)), routing_key=q))
        assert (close.name, close.reply_code, close.reply_text, close.class_id,
                close.method_id) == ("Channel.Close", 406, "PRECONDITION_FAILED - invalid "
                                     f"message: {{delivery_mode_unknown,{mode}}}", 60, 40)
    assert message_count(broker, q) == 0
    delete(broker, q)


def test_user_id_of_another_user_is_406(broker):
    with client(broker) as c:
        q = declared(broker, c)
        close = close_of(c, publish_frames(1, b"\x00\x10" + ss(b"bob"), routing_key=q))
        assert (close.name, close.reply_code, close.reply_text) == (
            "Channel.Close", 406, "PRECONDITION_FAILED - user_id property set to 'bob' but "
            "authenticated user was 'guest'")
        c.send(method(1, C.Channel.CloseOk()))
        c.send(method(2, C.Channel.Open()))
        assert c.wait_for("Channel.OpenOk")
        c.send(publish_frames(2, b"\x10\x10\x02" + ss(b"guest"), routing_key=q))
        assert c.rpc(2, C.Basic.Qos(), "Basic.QosOk") is not None  # own name: accepted
    assert message_count(broker, q) == 1
    delete(broker, q)


# ---------------------------------------------------------------------- frame-level faults

FRAME_FAULTS = {
    "heartbeat with payload": (frame(8, 0, b"\x00"), 501,
                               "FRAME_ERROR - type 8, all octets = <<0>>: unknown_frame"),
    "heartbeat on channel 1": (frame(8, 1, b""), 505,
                               "UNEXPECTED_FRAME - type 8, all octets = <<>>"),
    "frame type 9": (frame(9, 0, b""), 501,
                     "FRAME_ERROR - type 9, all octets = <<>>: unknown_frame"),
    "frame type 9 printable": (frame(9, 1, b"ab"), 501,
                               'FRAME_ERROR - type 9, all octets = <<"ab">>: unknown_frame'),
    "frame type 9 UTF-8": (frame(9, 1, "é".encode()), 501,
                           'FRAME_ERROR - type 9, all octets = <<"é">>: unknown_frame'),
    "method frame too short": (frame(1, 1, b"\x00\x3c"), 501,
                               "FRAME_ERROR - type 1, all octets = <<0,60>>: unknown_frame"),
    "method fields truncated": (frame(1, 1, b"\x00\x3c\x00\x0a\x00\x00"), 501,
                                "FRAME_ERROR - cannot decode <<0,0>>"),
    "method fields trailing": (frame(1, 1, b"\x00\x3c\x00\x0a" + bytes(7) + b"\x01"), 501,
                               "FRAME_ERROR - cannot decode <<0,0,0,0,0,0,0,1>>"),
    "body on channel 0": (frame(3, 0, b"abc"), 505,
                          'UNEXPECTED_FRAME - type 3, all octets = <<"abc">>'),
    "body without header": (frame(3, 1, b"abc"), 505, "UNEXPECTED_FRAME - expected method "
                            "frame, got non method frame instead"),
    # fuzz replay: content on a channel never opened is the assembler's 505, not 504
    "header on a channel not open": (frame(2, 7, struct.pack(">HHQ", 60, 0, 1) + b"\x00\x00"),
                                     505, "UNEXPECTED_FRAME - expected method frame, got non "
                                     "method frame instead"),
    "short header without a method": (frame(2, 1, b"\x00\x3c\x00\x00\x00"), 501,
                                      "FRAME_ERROR - type 2, all octets = <<0,60,0,0,0>>: "
                                      "unknown_frame"),
    "short header on channel 0": (frame(2, 0, b"\x00\x3c"), 501,
                                  "FRAME_ERROR - type 2, all octets = <<0,60>>: unknown_frame"),
    "body on a channel not open": (frame(3, 65535, b"abc"), 505, "UNEXPECTED_FRAME - expected "
                                   "method frame, got non method frame instead"),
    "bad frame end": (struct.pack(">BHI", 1, 1, 4) + b"\x00\x3c\x00\x0a\x00", 501,
                      "FRAME_ERROR - type 1, all octets = <<0,60,0,10>>: "
                      "{invalid_frame_end_marker,0}"),
    "frame too large": (struct.pack(">BHI", 1, 1, 200000) + bytes(64), 501,
                        "FRAME_ERROR - type 1, all octets = <<>>: "
                        "{frame_too_large,200000,131064}"),
}


@pytest.mark.parametrize("case", sorted(FRAME_FAULTS))
def test_frame_faults_have_rabbitmq_codes_and_texts(broker, case):
    data, code, text = FRAME_FAULTS[case]
    with client(broker) as c:
        c.send(data)
        close = c.close_reply()
        assert close is not None, "socket closed without Connection.Close"
        assert (close.reply_code, close.reply_text) == (code, text)


PUBLISH = method(1, C.Basic.Publish(exchange="", routing_key="nowhere"))
HEADER = frame(2, 1, struct.pack(">HHQ", 60, 0, 5) + b"\x00\x00")


@pytest.mark.parametrize("data,text", [
    (PUBLISH + method(1, C.Basic.Qos()),
     "expected content header for class 60, got non content header frame instead"),
    (PUBLISH + HEADER + method(1, C.Basic.Qos()),
     "expected content body, got non content body frame instead"),
    (PUBLISH + frame(2, 1, struct.pack(">HHQ", 50, 0, 1) + b"\x00\x00"),
     "expected content header for class 60, got one for class 50 instead"),
], ids=["method instead of header", "method instead of body", "header of class 50"])
def test_content_out_of_sequence_is_505_naming_the_publish(broker, data, text):
    with client(broker) as c:
        c.send(data)
        close = c.close_reply()
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
            505, f"UNEXPECTED_FRAME - {text}", 60, 40)


def test_body_larger_than_announced_is_never_queued(broker):
    with client(broker) as c:
        q = declared(broker, c)
        c.send(method(1, C.Basic.Publish(exchange="", routing_key=q)) +
               frame(2, 1, struct.pack(">HHQ", 60, 0, 2) + b"\x00\x00") + frame(3, 1, b"abcd") +
               method(1, C.Basic.Qos()))
        close = c.close_reply()
        assert close is not None and close.reply_code in (501, 505)
    assert message_count(broker, q) == 0
    delete(broker, q)


@pytest.mark.rabbitmq_310_differs("3.10 and 4.2 wait for more body and answer the next "
                                  "frame with 505; RabbitMQ's main branch answers 501 at once")
def test_body_larger_than_announced_is_501_at_once(broker):
    with client(broker) as c:
        c.send(PUBLISH + frame(2, 1, struct.pack(">HHQ", 60, 0, 2) + b"\x00\x00") +
               frame(3, 1, b"abcd"))
        close = c.close_reply()
        assert (close.reply_code, close.reply_text, close.class_id, close.method_id) == (
            501, "FRAME_ERROR - content body frame exceeds remaining content size", 60, 40)


# ---------------------------------------------------------------------- login

def _login(broker, mechanism: str, response: bytes):
    with RawClient(broker.host, broker.port) as c:
        return c.handshake(mechanism=mechanism, response=response), c.closed


def test_plain_with_invalid_utf8_user_is_403(broker):
    close, _closed = _login(broker, "PLAIN", b"\0\xff\xfe\0guest")
    assert (close.reply_code, close.reply_text) == (
        403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For "
        "details see the broker logfile.")


@pytest.mark.rabbitmq_310_differs("3.10 drops the socket without a Connection.Close")
def test_amqplain_with_invalid_utf8_user_is_403(broker):
    response = (ss(b"LOGIN") + b"S" + struct.pack(">I", 2) + b"\xff\xfe" + ss(b"PASSWORD") +
                b"S" + struct.pack(">I", 5) + b"guest")
    close, _closed = _login(broker, "AMQPLAIN", response)
    assert (close.reply_code, close.reply_text) == (
        403, "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. For "
        "details see the broker logfile.")
