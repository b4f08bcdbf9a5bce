"""The headers exchange: RabbitMQ 3.10's rabbit_exchange_type_headers, the message's
headers against each binding's arguments (``x-match``: all or any, ``-with-x`` to compare
the ``x-`` keys too).  The routing key plays no part."""
from __future__ import annotations

from .. import errors, values
from .base import Exchange
from .filtered import FILTER_ARGS

_X_MATCH = ("all", "any", "all-with-x", "any-with-x")
# binding arguments that are not headers to match, even under -with-x
_NOT_MATCHED = frozenset(("x-match",)) | FILTER_ARGS


def header_value_equal(a, b) -> bool:
    """RabbitMQ 3.10's ``PV == DV`` (rabbit_exchange_type_headers): Erlang's ``==`` on the
    decoded values, see ``values.erl_term``: numbers by value whatever their wire type
    (1 as I == 1 as l == 1.0 as d; 0.1 as f != 0.1 as d), a boolean only equals a boolean,
    a longstr equals a byte array with the same bytes; inside tables and arrays the types
    must agree too.  ``a``, ``b``: (tag, value) as ``FieldTable.typed`` gives, or plain
    decoded values (their wire type guessed)."""
    def term(v):
        if not (isinstance(v, tuple) and len(v) == 2 and v[0] in values.TYPE_NAMES):
            v = (values.guess_tag(v), v)
        return values.erl_term(v)
    return term(a) == term(b)


def headers_match(args: dict, headers: dict | None) -> bool:
    """RabbitMQ 3.10's headers_match: ``x-match`` (a longstr, else ``all``) picks all/any,
    ``-with-x`` also compares the ``x-`` keys; a void binding value matches presence."""
    tags = getattr(args, "tags", {})
    mode = args.get("x-match", "all")
    if tags.get("x-match", "S") != "S" or not isinstance(mode, str):
        mode = "all"
    with_x = mode in ("all-with-x", "any-with-x")
    want_all = mode not in ("any", "any-with-x")
    headers = headers or {}
    htags = getattr(headers, "tags", {})
    for k, v in args.items():
        if k in _NOT_MATCHED or (not with_x and k.startswith("x-")):
            continue
        tag = tags.get(k) or values.guess_tag(v)
        if k not in headers:
            ok = False
        elif tag == "V":  # void: the header only has to be present
            ok = True
        else:
            hv = headers[k]
            htag = htags.get(k) or values.guess_tag(hv)
            if htag == tag and tag not in "AFD":  # the usual case: same scalar type
                ok = hv == v
            else:
                ok = header_value_equal((tag, v), (htag, hv))
        if want_all and not ok:
            return False
        if ok and not want_all:
            return True
    return want_all


class HeadersExchange(Exchange):
    type = "headers"

    def validate_binding(self, routing_key, arguments):
        mode = arguments.get("x-match", "all")
        if not isinstance(mode, str) or mode not in _X_MATCH:
            raise errors.PreconditionFailed(
                f"Invalid x-match field value {mode!r}; expected all, any, all-with-x, or "
                "any-with-x")

    def route(self, msg, keys):
        # every binding is tried (no index); the headers are decoded once, here, only for
        # an exchange of this type
        headers = msg.headers or {}
        seen = {}
        for b in self.bindings.values():
            # target: the destination, or a Filtered that routing checks and replaces
            if id(b.target) not in seen and headers_match(b.arguments, headers):
                seen[id(b.target)] = b.target
        return seen.values()
