"""RabbitMQ's frame-fault errors and texts: what its reader (``rabbit_reader``) and
command assembler (``rabbit_command_assembler``) answer for frames they cannot use, with
the frame quoted as Erlang prints it."""
from __future__ import annotations

import struct

from . import errors

_u32 = struct.Struct(">I").unpack_from


def erl_binary(b: bytes) -> str:
    """A binary as RabbitMQ's texts print it (Erlang's ~tp): <<"text">> when it is
    printable UTF-8, else <<0,60>> (Erlang also prints printable Latin-1 bytes raw)."""
    try:
        text = b.decode()
    except UnicodeDecodeError:
        text = ""
    if text and text.isprintable():
        return '<<"' + text.replace("\\", "\\\\").replace('"', '\\"') + '">>'
    return "<<" + ",".join(map(str, b)) + ">>"


def frame_snippet(ftype: int, payload: bytes) -> str:
    """RabbitMQ's 'type T, all octets = <<...>>' (or 'first 16 octets')."""
    if len(payload) <= 16:
        return f"type {ftype}, all octets = {erl_binary(payload)}"
    return f"type {ftype}, first 16 octets = {erl_binary(payload[:16])}"


def unknown_frame(ftype: int, payload: bytes) -> errors.FrameError:
    """501 for a frame RabbitMQ cannot analyse: an unknown type, a heartbeat with a
    payload, a method or content header frame too short for its fixed fields."""
    return errors.FrameError(f"{frame_snippet(ftype, payload)}: unknown_frame")


def cannot_decode(payload: bytes) -> errors.FrameError:
    """501 for method fields that do not match the method's layout (RabbitMQ's text)."""
    index = _u32(payload)[0]
    b = payload[4:]
    # ~w, and never longer than a reply text can hold
    return errors.FrameError("cannot decode <<" + ",".join(map(str, b[:90])) + ">>",
                             index >> 16, index & 0xFFFF)


def unexpected(publish, props) -> errors.UnexpectedFrame:
    """RabbitMQ's 505 for a frame that is not what the channel's content assembly expects
    next: a method (no publish in progress), the publish's content header, or its body."""
    if publish is None:
        return errors.UnexpectedFrame("expected method frame, got non method frame instead")
    if props is None:
        return errors.UnexpectedFrame(
            "expected content header for class 60, got non content header frame instead",
            60, 40)
    return errors.UnexpectedFrame("expected content body, got non content body frame instead",
                                  60, 40)
