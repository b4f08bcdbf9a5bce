"""Policies and operator policies, as RabbitMQ's (rabbit_policy, rabbit_policies and the
classic queue's ``process_args_policy``): per vhost, a name, a regex ``pattern`` matched
against queue or exchange names (unanchored, as re:run), ``apply-to``, a ``priority``
and a ``definition``.  Of the policies that match an object, the one with the highest
priority applies (one user policy and one operator policy, never a merge of several).

What an applied policy means for a queue is the arguments it would have had: each key
becomes its ``x-`` argument, merged with the declared arguments by RabbitMQ's rule for
that key (``MERGE``): for limits and TTLs the smaller value wins, for the dead-letter
target and overflow the declared argument wins.  An operator policy's value is merged
with the user policy's the same way (lower wins).  Priorities and the queue type cannot
be set by policy.  For an exchange: ``alternate-exchange`` (the argument wins).

The vhost keeps its ``Policies`` and re-applies them to every queue and exchange when one
is set or cleared, and to a queue or exchange when it is declared or recovered."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

from . import errors

log = logging.getLogger("amqpbroker.policies")

APPLY_TO = ("all", "exchanges", "queues", "classic_queues", "quorum_queues", "streams")

MIN, ARG = "min", "arg"   # merge rules: the smaller value wins; the declared argument wins

# definition key -> (the queue argument it stands for, the merge rule)
QUEUE_KEYS = {
    "message-ttl": ("x-message-ttl", MIN),
    "expires": ("x-expires", MIN),
    "max-length": ("x-max-length", MIN),
    "max-length-bytes": ("x-max-length-bytes", MIN),
    "delivery-limit": ("x-delivery-limit", MIN),
    "overflow": ("x-overflow", ARG),
    "dead-letter-exchange": ("x-dead-letter-exchange", ARG),
    "dead-letter-routing-key": ("x-dead-letter-routing-key", ARG),
    "queue-mode": ("x-queue-mode", ARG),   # accepted, no effect (as RabbitMQ 3.12+)
}
EXCHANGE_KEYS = {"alternate-exchange": ("alternate-exchange", ARG)}
# what an operator policy may set (RabbitMQ's operator_policy_validator keys we act on)
OPERATOR_KEYS = ("message-ttl", "expires", "max-length", "max-length-bytes",
                 "delivery-limit")
# keys RabbitMQ knows that we accept and ignore (federation, shovel, HA mirroring: there
# is nothing of ours they could change), so that definitions from RabbitMQ import
IGNORED_KEYS = ("ha-mode", "ha-params", "ha-sync-mode", "ha-promote-on-shutdown",
                "ha-promote-on-failure", "queue-master-locator", "queue-leader-locator",
                "federation-upstream", "federation-upstream-set", "max-in-memory-length",
                "max-in-memory-bytes", "queue-version", "initial-cluster-size",
                "dead-letter-strategy", "max-age", "stream-max-segment-size-bytes")


class PolicyError(ValueError):
    """A policy RabbitMQ would refuse; the text says why, in RabbitMQ's words."""


def _tp(v) -> str:
    """A value as Erlang's ~tp prints it (binaries as <<"...">>)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'<<"{v}">>'
    return str(v)


def _int_at_least(low: int, what: str):
    def check(v):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise PolicyError(f"{_tp(v)} is not a valid {what}")
    return check


def _string(what: str):
    def check(v):
        if not isinstance(v, str):
            raise PolicyError(f"{_tp(v)} is not a valid {what}")
    return check


def _one_of(values: tuple, what: str):
    def check(v):
        if v not in values:
            raise PolicyError(f"{_tp(v)} is not a valid {what}")
    return check


# rabbit_policies:validate_policy0, with its texts
VALIDATE = {
    "alternate-exchange": _string("alternate exchange name"),
    "dead-letter-exchange": _string("dead letter exchange name"),
    "dead-letter-routing-key": _string("dead letter routing key"),
    "message-ttl": _int_at_least(0, "message TTL"),
    "expires": _int_at_least(1, "queue expiry"),
    "max-length": _int_at_least(0, "maximum length"),
    "max-length-bytes": _int_at_least(0, "maximum length in bytes"),
    "delivery-limit": _int_at_least(0, "delivery limit"),
    "overflow": _one_of(("drop-head", "reject-publish", "reject-publish-dlx"),
                        "overflow value"),
    "queue-mode": _one_of(("default", "lazy"), "queue-mode value"),
}


@dataclass(frozen=True)
class Policy:
    vhost: str
    name: str
    pattern: str
    definition: dict
    priority: int = 0
    apply_to: str = "all"
    operator: bool = False
    regex: re.Pattern = field(compare=False, repr=False, default=None)

    def applies_to(self, kind: str, name: str, queue_type: str = "classic") -> bool:
        if kind == "exchange":
            if self.apply_to not in ("all", "exchanges"):
                return False
        elif self.apply_to == "exchanges" or self.apply_to not in (
                "all", "queues", f"{queue_type}_queues"):
            return False
        return self.regex.search(name) is not None

    def as_json(self) -> dict:
        """RabbitMQ's shape (definitions, GET /api/policies)."""
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern,
                "apply-to": self.apply_to, "definition": dict(self.definition),
                "priority": self.priority}


def make(vhost: str, name: str, pattern, definition, priority=0, apply_to="all",
         operator: bool = False) -> Policy:
    """A validated policy, or PolicyError naming the problem."""
    if not isinstance(name, str) or not name:
        raise PolicyError("a policy needs a name")
    if not isinstance(pattern, str):
        raise PolicyError(f"{_tp(pattern)} is not a valid pattern")
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise PolicyError(f"{_tp(pattern)} is not a valid regular expression ({e})") from None
    if apply_to not in APPLY_TO:
        raise PolicyError(f"{_tp(apply_to)} is not a valid apply-to value "
                          f"(expected one of {', '.join(APPLY_TO)})")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise PolicyError(f"{_tp(priority)} is not a valid priority")
    if not isinstance(definition, dict) or not definition:
        raise PolicyError("the definition must be a non-empty object")
    allowed = OPERATOR_KEYS if operator else (*QUEUE_KEYS, *EXCHANGE_KEYS, *IGNORED_KEYS)
    unknown = sorted(k for k in definition if k not in allowed)
    if unknown:
        terms = ",".join("{%s,%s}" % (_tp(k), _tp(definition[k])) for k in unknown)
        raise PolicyError(f"[{terms}] are not recognised policy settings")
    for key, value in definition.items():
        check = VALIDATE.get(key)
        if check is not None:
            check(value)
    if "dead-letter-routing-key" in definition and "dead-letter-exchange" not in definition:
        pass  # RabbitMQ accepts it: the queue's own x-dead-letter-exchange may supply it
    return Policy(vhost, name, pattern, dict(definition), priority, apply_to, operator, regex)


class Policies:
    """One vhost's policies and operator policies."""

    def __init__(self):
        self.user: dict[str, Policy] = {}
        self.operator: dict[str, Policy] = {}

    def __bool__(self) -> bool:
        return bool(self.user or self.operator)

    def table(self, operator: bool) -> dict[str, Policy]:
        return self.operator if operator else self.user

    def set(self, p: Policy) -> None:
        self.table(p.operator)[p.name] = p

    def delete(self, name: str, operator: bool = False) -> Policy | None:
        return self.table(operator).pop(name, None)

    def _best(self, table: dict, kind: str, name: str, queue_type: str) -> Policy | None:
        best = None
        for p in table.values():  # the highest priority; among equals the first by name
            if p.applies_to(kind, name, queue_type) and (
                    best is None or (-p.priority, p.name) < (-best.priority, best.name)):
                best = p
        return best

    def matching(self, kind: str, name: str, queue_type: str = "classic"):
        """(user policy, operator policy) that apply to the object, either may be None."""
        if not name:  # the default exchange takes no policy
            return None, None
        return (self._best(self.user, kind, name, queue_type),
                self._best(self.operator, kind, name, queue_type) if kind == "queue"
                else None)

    def effective(self, kind: str, name: str, arguments: dict,
                  queue_type: str = "classic") -> tuple[dict, Policy | None, Policy | None]:
        """The arguments the object acts on: its declared ``arguments`` with the applying
        policies merged in by each key's rule; and the two policies."""
        user, op = self.matching(kind, name, queue_type)
        if user is None and op is None:
            return arguments, None, None
        keys = EXCHANGE_KEYS if kind == "exchange" else QUEUE_KEYS
        definition = dict(user.definition) if user is not None else {}
        if op is not None:  # operator policy and user policy: the lower value wins
            for k, v in op.definition.items():
                definition[k] = min(v, definition[k]) if k in definition else v
        out = dict(arguments)
        for key, value in definition.items():
            if key not in keys:
                continue
            arg, rule = keys[key]
            declared = arguments.get(arg)
            if declared is None:
                out[arg] = value
            elif rule == MIN and isinstance(declared, int) and not isinstance(declared, bool):
                out[arg] = min(declared, value)
        return out, user, op

    def export(self, operator: bool = False) -> list[dict]:
        return [p.as_json() for _n, p in sorted(self.table(operator).items())]


# ---------------------------------------------------------------------- applying

def apply_queue(vhost, q, now: float) -> None:
    """Give a queue the arguments its policies make (at declare, recovery, and when a
    policy of its vhost changes).  Nothing to do while the vhost has none and had none."""
    pol = vhost.policies
    if not pol and q.policy is None and q.operator_policy is None:
        return
    arguments, q.policy, q.operator_policy = pol.effective(
        "queue", q.name, q.arguments, q.args.queue_type)
    try:  # (the queue's own QueueArgs class: this module stays below the queues)
        args = type(q.args).parse(q.name, vhost.name, arguments, q.arg_types)
    except errors.AMQPError as e:  # e.g. a policy's routing key without any DLX
        log.warning("policy for queue '%s' in vhost '%s' not applied: %s", q.name,
                    vhost.name, e.reply_text)
        return
    if args != q.args:
        q.reconfigure(args, now)


def apply_exchange(vhost, ex) -> None:
    if vhost.policies or ex.policy is not None:
        ex.policy = vhost.policies.matching("exchange", ex.name)[0]


def apply_all(vhost, now: float) -> None:
    for q in list(vhost.queues.values()):
        apply_queue(vhost, q, now)
    for ex in vhost.exchanges.values():
        apply_exchange(vhost, ex)


def set_policy(vhost, p: Policy, now: float, store: bool = True) -> None:
    """Set (or replace) a policy and apply it at once; ``store``: keep it across restarts
    (a policy from the configuration file is not stored: the file says it again)."""
    vhost.policies.set(p)
    if store and vhost.store.durable:
        vhost.store.put_policy(vhost.name, p.name, p.operator, json.dumps(p.as_json()))
    apply_all(vhost, now)


def clear_policy(vhost, name: str, operator: bool, now: float) -> None:
    if vhost.policies.delete(name, operator) is None:
        raise errors.NotFound(f"no {'operator ' if operator else ''}policy '{name}' in "
                              f"vhost '{vhost.name}'")
    if vhost.store.durable:
        vhost.store.delete_policy(vhost.name, name, operator)
    apply_all(vhost, now)


def restore(vhost, recovered) -> None:
    """The policies set while an earlier process ran (before the queues are rebuilt)."""
    for v, name, operator, doc in recovered.policies:
        if v == vhost.name:
            d = json.loads(doc)
            vhost.policies.set(make(v, name, d["pattern"], d["definition"],
                                    d.get("priority", 0), d.get("apply-to", "all"), operator))
