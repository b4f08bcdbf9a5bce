"""Filter policies on bindings, for every exchange type: binding arguments
``x-filter-policy`` (an SNS filter policy: a JSON string or a table of the same shape,
compiled by ``filterpolicy``) and ``x-filter-policy-scope`` (``headers``, the default, or
``body``).  A binding with a policy routes a message only when its type routes it and the
policy matches.

How it plugs in without touching the types: ``Exchange.add`` compiles the policy (406 for
a bad one) and gives the type's index a ``Filtered`` in place of the destination, and
counts the binding in ``e2e``, so routing leaves the one-key fast path and walks
(``routing._walk``), where each ``Filtered`` found is checked against the message and
replaced by its destination.  Bindings without a policy cost nothing more.

What a policy sees is built per message, once, and only when a filtered binding is
consulted (``MessageView``): in ``headers`` scope the headers plus the standard properties
under their snake_case names and the routing key (a header of the same name wins; byte
arrays are ignored, as SNS ignores Binary attributes); in ``body`` scope the body decoded
as JSON (a body that is not a JSON object matches nothing).
"""
from __future__ import annotations

import json

from .. import errors
from ..filterpolicy import Policy, PolicyError, compile_policy

POLICY_ARG = "x-filter-policy"
SCOPE_ARG = "x-filter-policy-scope"
FILTER_ARGS = frozenset((POLICY_ARG, SCOPE_ARG))
# (policy name, pamqp's attribute): the standard properties a headers-scope policy sees
PROPERTIES = (("content_type", "content_type"), ("content_encoding", "content_encoding"),
              ("delivery_mode", "delivery_mode"), ("priority", "priority"),
              ("correlation_id", "correlation_id"), ("reply_to", "reply_to"),
              ("expiration", "expiration"), ("message_id", "message_id"),
              ("timestamp", "timestamp"), ("type", "message_type"), ("user_id", "user_id"),
              ("app_id", "app_id"))


def binding_policy(arguments: dict) -> Policy | None:
    """The compiled policy of a binding's arguments, None without one; 406 naming the
    problem for an invalid one."""
    if POLICY_ARG not in arguments:
        if SCOPE_ARG in arguments:
            raise errors.PreconditionFailed(f"{SCOPE_ARG} given without {POLICY_ARG}")
        return None
    scope = arguments.get(SCOPE_ARG, "headers")
    try:
        return compile_policy(arguments[POLICY_ARG], scope)
    except PolicyError as e:
        raise errors.PreconditionFailed(f"invalid {POLICY_ARG}: {e}") from None


class Filtered:
    """What a type's index holds for a binding with a policy: one per binding."""

    __slots__ = ("destination", "policy")

    def __init__(self, destination, policy: Policy):
        self.destination = destination
        self.policy = policy

    def __repr__(self) -> str:
        return f"Filtered({getattr(self.destination, 'name', self.destination)!r})"


class MessageView:
    """The documents policies read for one message, each built on first use."""

    __slots__ = ("msg", "_headers", "_body")

    def __init__(self, msg):
        self.msg = msg
        self._headers = self._body = None

    def matches(self, f: Filtered) -> bool:
        policy = f.policy
        if policy.scope == "headers":
            doc = self._headers
            if doc is None:
                doc = self._headers = headers_doc(self.msg)
        else:
            doc = self._body
            if doc is None:
                doc = self._body = body_doc(self.msg.body)
        return policy.match(doc)


def headers_doc(msg) -> dict:
    doc: dict = {"routing_key": msg.routing_key}
    if msg.flags:
        props = msg.properties  # decoded once per message (Message caches it)
        for name, attr in PROPERTIES:
            v = getattr(props, attr)
            if v is not None:
                doc[name] = v
        headers = props.headers
        if headers:
            for k, v in headers.items():
                if not isinstance(v, (bytes, bytearray)):
                    doc[k] = v
    return doc


def body_doc(body) -> dict | bool:
    """The JSON object of a body; False (matches nothing, and is not decoded again) for
    anything else."""
    try:
        doc = json.loads(bytes(body))
    except ValueError:  # not UTF-8 or not JSON
        return False
    return doc if isinstance(doc, dict) else False
