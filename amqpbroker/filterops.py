"""The operators of filter policies (see ``filterpolicy``): each value of a key's array
compiles to a ``Cond``: exact values to look up in sets, a test of one message value
(``each``: prefix, suffix, equals-ignore-case, numeric, cidr) or a test of the key's whole
value list (``whole``: anything-but, exists).  Refusals raise ``PolicyError``."""
from __future__ import annotations

import ipaddress
import json
from decimal import Decimal

MAX_NUMBER = 1e9
OPERATORS = ("prefix", "suffix", "equals-ignore-case", "anything-but", "numeric",
             "exists", "cidr")
_LOWER, _UPPER = (">", ">="), ("<", "<=")


class PolicyError(ValueError):
    """An invalid filter policy, or one past a limit; the text names the problem."""


def is_number(v) -> bool:
    t = type(v)  # exact types: a bool is not a number
    return t is int or t is float or t is Decimal


def num(v) -> float:
    """A number as policies compare it: 5 digits after the decimal point (an integer too
    large for a float compares as infinite)."""
    try:
        return round(float(v), 5)
    except OverflowError:
        return float("inf") if v > 0 else float("-inf")


class Cond:
    """One value of a key's array.  ``exact``: (strings, numbers, others) it equals;
    ``each``: a test of one value; ``whole``: a test of the key's whole value list (or
    None: absent)."""
    __slots__ = ("strings", "numbers", "others", "each", "whole")

    def __init__(self, strings=(), numbers=(), others=(), each=None, whole=None):
        self.strings, self.numbers, self.others = strings, numbers, others
        self.each, self.whole = each, whole


def condition(c, where: str) -> Cond:
    if isinstance(c, str):
        return Cond(strings=(c,))
    if c is True or c is False or c is None:
        return Cond(others=(c,))
    if is_number(c):
        return Cond(numbers=(num(_check_number(c, where)),))
    if isinstance(c, list):
        raise PolicyError(f"key '{where}': an array inside the array of values")
    if len(c) != 1:
        raise PolicyError(f"key '{where}': an operator object must have exactly one key, "
                          f"got {sorted(c)}")
    (op, arg), = c.items()
    if op not in OPERATORS:
        raise PolicyError(f"key '{where}': unknown operator '{op}'")
    return _OPERATOR[op](arg, where)


def _check_number(n, where: str):
    if not is_number(n):
        raise PolicyError(f"key '{where}': expected a number, got {json.dumps(n)}")
    if not -MAX_NUMBER <= n <= MAX_NUMBER:
        raise PolicyError(f"key '{where}': the number {n} is outside -10^9..10^9")
    return n


def _string_arg(op: str, arg, where: str) -> str:
    if not isinstance(arg, str):
        raise PolicyError(f"key '{where}': '{op}' expects a string, got {json.dumps(arg)}")
    return arg


def _prefix(arg, where):
    p = _string_arg("prefix", arg, where)
    return Cond(each=lambda v: v.__class__ is str and v.startswith(p))


def _suffix(arg, where):
    s = _string_arg("suffix", arg, where)
    return Cond(each=lambda v: v.__class__ is str and v.endswith(s))


def _equals_ignore_case(arg, where):
    s = _string_arg("equals-ignore-case", arg, where).casefold()
    return Cond(each=lambda v: v.__class__ is str and v.casefold() == s)


def _anything_but(arg, where):
    if isinstance(arg, dict):
        if list(arg) != ["prefix"]:
            raise PolicyError(f"key '{where}': 'anything-but' takes values or "
                              f"{{\"prefix\": ...}}, got {json.dumps(arg)}")
        p = _string_arg("anything-but prefix", arg["prefix"], where)

        def but_prefix(vals):
            vals = [v for v in vals or () if v is not None]
            return bool(vals) and all(v.__class__ is str and not v.startswith(p)
                                      for v in vals)
        return Cond(whole=but_prefix)
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        raise PolicyError(f"key '{where}': 'anything-but' needs at least one value")
    strings, numbers = set(), set()
    for x in items:
        if isinstance(x, str):
            strings.add(x)
        elif is_number(x) and not isinstance(x, bool):
            numbers.add(num(_check_number(x, where)))
        else:
            raise PolicyError(f"key '{where}': 'anything-but' takes strings and numbers, "
                              f"got {json.dumps(x)}")

    def excluded(v):
        if v.__class__ is str:
            return v in strings
        return is_number(v) and num(v) in numbers

    def but(vals):
        vals = [v for v in vals or () if v is not None]
        return bool(vals) and not any(excluded(v) for v in vals)
    return Cond(whole=but)


_NUMERIC_OPS = {"=": lambda a, b: a == b, "<": lambda a, b: a < b,
                "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b}


def _numeric(arg, where):
    bad = f"key '{where}': 'numeric' expects [\"=\", n] or [op, n] or [op, n, op, n], " \
          f"got {json.dumps(arg)}"
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise PolicyError(bad)
    tests = []
    for i in range(0, len(arg), 2):
        op, n = arg[i], arg[i + 1]
        if op not in _NUMERIC_OPS or not is_number(n):
            raise PolicyError(bad)
        tests.append((_NUMERIC_OPS[op], num(_check_number(n, where))))
    if len(tests) == 2:
        (lo_op, lo), (hi_op, hi) = arg[0:2], arg[2:4]
        if lo_op not in _LOWER or hi_op not in _UPPER:
            raise PolicyError(f"key '{where}': a numeric range is a lower bound (> or >=) "
                              f"then an upper bound (< or <=), got {json.dumps(arg)}")
        if not lo < hi:
            raise PolicyError(f"key '{where}': the numeric range's lower bound {lo} is not "
                              f"below its upper bound {hi}")

    def each(v):
        if not is_number(v):
            return False
        x = num(v)
        for f, n in tests:
            if not f(x, n):
                return False
        return True
    return Cond(each=each)


def _exists(arg, where):
    if not isinstance(arg, bool):
        raise PolicyError(f"key '{where}': 'exists' expects true or false, "
                          f"got {json.dumps(arg)}")
    if arg:
        return Cond(whole=lambda vals: vals is not None and any(v is not None for v in vals))
    return Cond(whole=lambda vals: vals is None or all(v is None for v in vals))


def _cidr(arg, where):
    s = _string_arg("cidr", arg, where)
    try:
        net = ipaddress.ip_network(s, strict=False)
    except ValueError:
        raise PolicyError(f"key '{where}': invalid cidr {s!r}") from None

    def each(v):
        if v.__class__ is not str:
            return False
        try:
            return ipaddress.ip_address(v) in net
        except ValueError:
            return False
    return Cond(each=each)


_OPERATOR = {"prefix": _prefix, "suffix": _suffix, "equals-ignore-case": _equals_ignore_case,
             "anything-but": _anything_but, "numeric": _numeric, "exists": _exists,
             "cidr": _cidr}
