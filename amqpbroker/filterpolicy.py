"""SNS-style filter policies: ``compile_policy(policy, scope) -> Policy``, then
``Policy.match(doc) -> bool`` for each message.

``policy`` is a JSON string or a mapping of the same shape (an AMQP field table decodes
to one).  ``doc`` is what the message offers: in ``headers`` scope a flat mapping (the
headers plus the standard properties, see ``exchanges.filtered``), in ``body`` scope the
decoded JSON body.  AWS SNS's filter policy semantics (Developer Guide, "subscription
filter policies" and the pages it links):

- keys are ANDed, the values in a key's array ORed; ``"$or": [{..}, {..}]`` ORs
  sub-policies (only an array of at least two objects without operator keys; otherwise
  "$or" is an ordinary key, as SNS);
- a value is an exact string, number (by value, to 5 decimal places), boolean or null, or
  an object with one operator: ``prefix``, ``suffix``, ``equals-ignore-case``,
  ``anything-but`` (values, or ``{"prefix": ..}``), ``numeric`` (``["=", n]``, or one or
  two bounds ``[">", a, "<=", b]``), ``exists`` (true/false), ``cidr`` (IPv4/IPv6);
- a message value that is an array matches when one of its elements does, except
  ``anything-but``, which holds only when none of the elements is excluded;
- ``exists: true`` needs the key with a value that is not null; every other operator
  needs the key too (``anything-but`` does not match an absent key: combine it with
  ``exists: false`` for that); a message with no attributes at all matches nothing;
- body scope: keys nest (``{"a": {"b": ["x"]}}``), and an array of objects on the way is
  searched element by element.

Limits, as SNS: at most 5 keys in one AND-combination (every key in headers scope; the
top-level keys in body scope), at most 150 value combinations (the product of the
values' array lengths, summed over the ``$or`` branches), numbers within +-10^9, 256 KB.
Everything else that SNS would refuse raises ``PolicyError`` naming the problem.

Compiled once: a policy becomes nested closures over precomputed sets, so matching a
message does no parsing and no dispatch on the policy's shape.
"""
from __future__ import annotations

import json
from decimal import Decimal

from .filterops import OPERATORS, PolicyError, condition, is_number, num  # noqa: F401

MAX_KEYS = 5
MAX_COMBINATIONS = 150
MAX_SIZE = 256 * 1024
SCOPES = ("headers", "body")
_MISSING = object()


# --------------------------------------------------------------------------- parsing


def _reject_constant(name):
    raise PolicyError(f"invalid number {name}")


def parse(policy) -> dict:
    """A policy as plain JSON values (dicts, lists, str, int/float, bool, None)."""
    if isinstance(policy, (bytes, bytearray)):
        try:
            policy = policy.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError("the policy is not valid UTF-8") from None
    if isinstance(policy, str):
        if len(policy.encode("utf-8", "surrogateescape")) > MAX_SIZE:
            raise PolicyError(f"the policy is larger than {MAX_SIZE // 1024} KB")
        try:
            doc = json.loads(policy, parse_constant=_reject_constant)
        except PolicyError:
            raise
        except ValueError as e:
            raise PolicyError(f"the policy is not valid JSON: {e}") from None
    elif isinstance(policy, dict):
        doc = _plain(policy, "")
        if len(json.dumps(doc)) > MAX_SIZE:
            raise PolicyError(f"the policy is larger than {MAX_SIZE // 1024} KB")
    else:
        raise PolicyError("the policy must be a JSON string or a table, "
                          f"not {type(policy).__name__}")
    if not isinstance(doc, dict):
        raise PolicyError("the policy must be a JSON object")
    return doc


def _plain(v, where: str):
    """A decoded field table as JSON values: a decimal is a number; bytes, timestamps
    given as such and the like have no JSON form (an int is an int whatever its width)."""
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{where}.{k}" if where else str(k)) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x, where) for x in v]
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, Decimal):
        return float(v)
    raise PolicyError(f"key '{where}': a {type(v).__name__} value has no JSON form")


# --------------------------------------------------------------------------- compiling


class Policy:
    """A compiled policy.  ``combinations`` and ``keys`` are what the limits counted."""

    __slots__ = ("scope", "source", "combinations", "keys", "_match")

    def __init__(self, scope, source, combinations, keys, match):
        self.scope, self.source = scope, source
        self.combinations, self.keys, self._match = combinations, keys, match

    def match(self, doc) -> bool:
        """True when ``doc`` (a mapping; anything else matches nothing) passes."""
        if not doc or not isinstance(doc, dict):
            return False  # as SNS: no attributes (or no JSON object) match no policy
        return self._match(doc)

    def __repr__(self) -> str:
        return f"Policy({self.scope}, {json.dumps(self.source, sort_keys=True)})"


def compile_policy(policy, scope: str = "headers") -> Policy:
    if scope not in SCOPES:
        raise PolicyError(f"invalid x-filter-policy-scope {scope!r}; expected headers or body")
    doc = parse(policy)
    if not doc:
        raise PolicyError("the policy is empty")
    match, combos, keys = _node(doc, (), scope)
    if keys > MAX_KEYS:
        raise PolicyError(f"the policy has {keys} keys in one combination; "
                          f"at most {MAX_KEYS} are allowed")
    if combos > MAX_COMBINATIONS:
        raise PolicyError(f"the policy has {combos} value combinations; "
                          f"at most {MAX_COMBINATIONS} are allowed")
    return Policy(scope, doc, combos, keys, match)


def is_or(key, value) -> bool:
    """SNS reads "$or" as the operator only for an array of at least two objects none of
    whose keys is an operator keyword."""
    return (key == "$or" and isinstance(value, list) and len(value) >= 2
            and all(isinstance(b, dict) and not (set(b) & set(OPERATORS)) for b in value))


def _node(doc: dict, path: tuple, scope: str):
    """An object of the policy -> (match(doc), combinations, keys in one combination).
    ``path``: the keys above it (body scope)."""
    tests = []  # functions of the document root
    combos = 1
    keys = 0
    for key, value in doc.items():
        if is_or(key, value):
            if not all(value):
                raise PolicyError(f"key '{'.'.join(path + ('$or',))}': an empty object "
                                  "among the $or branches")
            branches = [_node(b, path, scope) for b in value]
            combos *= sum(c for _m, c, _k in branches)
            keys += max(k for _m, _c, k in branches)
            tests.append(_any_of([m for m, _c, _k in branches]))
            continue
        where = ".".join(path + (key,))
        if isinstance(value, dict):
            if scope != "body":
                raise PolicyError(f"key '{where}': nested keys need "
                                  "x-filter-policy-scope body")
            if not value:
                raise PolicyError(f"key '{where}': an empty object")
            m, c, k = _node(value, path + (key,), scope)
            tests.append(m)
            combos *= c
            keys += k if path or scope == "headers" else 1
            continue
        conditions = value if isinstance(value, list) else [value]
        if not conditions:
            raise PolicyError(f"key '{where}': an empty array of values")
        tests.append(_leaf(path + (key,), [condition(c, where) for c in conditions]))
        combos *= len(conditions)
        keys += 1 if (not path or scope == "headers") else 0
    if len(tests) == 1:
        return tests[0], combos, keys
    return _all_of(tests), combos, keys


def _all_of(tests):
    def match(doc):
        for t in tests:
            if not t(doc):
                return False
        return True
    return match


def _any_of(tests):
    def match(doc):
        for t in tests:
            if t(doc):
                return True
        return False
    return match


def lookup(doc: dict, path: tuple):
    """The values at ``path`` (a list; the elements of an array value are values), or
    None when the key is absent.  Arrays of objects on the way are searched through."""
    if len(path) == 1:
        v = doc.get(path[0], _MISSING)
        if v is _MISSING:
            return None
        if isinstance(v, list):
            return v or None
        return [v]
    cur = [doc]
    for k in path:
        nxt = []
        for c in cur:
            if isinstance(c, dict) and k in c:
                v = c[k]
                if isinstance(v, list):
                    nxt.extend(v)
                else:
                    nxt.append(v)
        if not nxt:
            return None
        cur = nxt
    return cur


def _leaf(path: tuple, conds: list):
    strings = frozenset(s for c in conds for s in c.strings)
    numbers = frozenset(n for c in conds for n in c.numbers)
    others = tuple(o for c in conds for o in c.others)  # True, False, None: by identity
    each = tuple(c.each for c in conds if c.each is not None)
    whole = tuple(c.whole for c in conds if c.whole is not None)

    def match(doc):
        vals = lookup(doc, path)
        if vals is not None:
            for v in vals:
                if v.__class__ is str:
                    if v in strings:
                        return True
                elif v is True or v is False or v is None:
                    if any(v is o for o in others):
                        return True
                elif is_number(v) and num(v) in numbers:
                    return True
                for t in each:
                    if t(v):
                        return True
        for t in whole:
            if t(vals):
                return True
        return False
    return match
