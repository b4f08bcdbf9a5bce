"""Poison pills (issue 10): a message with the header ``x-poison-pill`` set to boolean
true.  In its queue it is an ordinary message; the consumer it is delivered to gets no
further deliveries and is cancelled once it has settled the pill (delivery.py holds that
state machine, per channel).  ``Admin.drain`` appends one pill per consumer (``message``).

Only a boolean true is a pill: a string "true", a number or false is an ordinary header,
so the test below cannot be fooled by a header that merely mentions the name."""
from __future__ import annotations

from .framing import table_items
from .message import F_DELIVERY_MODE, F_HEADERS, Message, enc_table, split_properties

HEADER = "x-poison-pill"
# the header's key as it appears on the wire (a shortstr): a message whose raw properties
# do not contain these bytes is not a pill, found by C-level searches (delivery.py first
# looks for the length byte alone, far cheaper), so messages with other headers pay next
# to nothing and are never decoded for it
MARK = bytes((len(HEADER),)) + HEADER.encode()
_TRUE = b"t\x01"


def is_pill(msg: Message) -> bool:
    if not msg.flags & F_HEADERS or MARK not in msg.props:
        return False
    headers = split_properties(msg.props).get(F_HEADERS)
    for key, value in table_items(headers):
        if key == HEADER:
            return value[:1] == b"t" and value[1:2] != b"\x00"
    return False


def message(queue: str, persistent: bool) -> Message:
    """A pill for ``queue`` through the default exchange: an empty body, the header, and
    delivery-mode 2 when ``persistent`` (a durable queue keeps it across a restart)."""
    flags = F_HEADERS | (F_DELIVERY_MODE if persistent else 0)
    props = bytes((flags >> 8, flags & 0xFF)) + enc_table([(HEADER, _TRUE)]) + \
        (b"\x02" if persistent else b"")
    return Message("", queue, props, b"")
