"""Filter policies (amqpbroker/filterpolicy.py): every operator on the examples of AWS SNS's
Developer Guide, the refusals and limits, and a Hypothesis model: a naive interpreter that
expands the policy into its OR of ANDs (the way SNS counts combinations) against the
compiled closures."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpbroker.filterpolicy import PolicyError, compile_policy, is_or


def m(policy, doc, scope="headers") -> bool:
    return compile_policy(policy if isinstance(policy, str) else json.dumps(policy),
                          scope).match(doc)


# --------------------------------------------------------------------------- operators


def test_exact_string_and_or_of_values():
    p = {"customer_interests": ["rugby", "tennis"]}
    assert m(p, {"customer_interests": "rugby"})
    assert m(p, {"customer_interests": "tennis"})
    assert m(p, {"customer_interests": ["baseball", "tennis"]})  # an array: one element
    assert not m(p, {"customer_interests": "baseball"})
    assert not m(p, {"customer_interests": "Rugby"})  # case-sensitive
    assert not m(p, {"other": "rugby"})


def test_scalar_value_is_a_one_element_array():
    assert m({"a": "x"}, {"a": "x"})
    assert not m({"a": "x"}, {"a": "y"})


def test_exact_number_by_value_to_five_decimals():
    p = {"price_usd": [301.5]}
    assert m(p, {"price_usd": 301.5})
    assert m(p, {"price_usd": 3.015e2})
    assert m(p, {"price_usd": Decimal("301.500001")})  # beyond 5 decimals: equal
    assert not m(p, {"price_usd": 301.51})
    assert not m(p, {"price_usd": "301.5"})  # a string is not a number
    assert m({"n": [1]}, {"n": 1.0})
    assert not m({"n": [1]}, {"n": True})  # a boolean is not 1


def test_exact_booleans_and_null():
    assert m({"a": [True]}, {"a": True})
    assert not m({"a": [True]}, {"a": 1})
    assert not m({"a": [False]}, {"a": 0})
    assert m({"a": [None]}, {"a": None})
    assert not m({"a": [None]}, {"b": 1})


def test_keys_are_anded():
    p = {"customer_interests": ["rugby"], "price_usd": [{"numeric": [">", 100]}]}
    assert m(p, {"customer_interests": "rugby", "price_usd": 101})
    assert not m(p, {"customer_interests": "rugby", "price_usd": 100})
    assert not m(p, {"customer_interests": "rugby"})


def test_or_operator():
    p = {"source": ["aws.cloudwatch"],
         "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]}
    assert m(p, {"source": "aws.cloudwatch", "metricName": "CPUUtilization"})
    assert m(p, {"source": "aws.cloudwatch", "namespace": "AWS/EC2"})
    assert not m(p, {"source": "aws.cloudwatch", "namespace": "AWS/S3"})
    assert not m(p, {"source": "x", "metricName": "CPUUtilization"})


def test_or_with_operator_keys_or_one_branch_is_an_ordinary_key():
    assert not is_or("$or", [{"numeric": 123}, {"prefix": "abc"}])
    assert not is_or("$or", [{"a": ["x"]}])
    # then "$or" is the name of an attribute: its value is a list of conditions
    p = {"$or": [{"prefix": "ab"}, {"numeric": ["=", 1]}]}
    assert m(p, {"$or": "abc"})
    assert m(p, {"$or": 1})
    assert not m(p, {"a": "abc"})


def test_nested_or():
    p = {"$or": [{"a": ["1"]}, {"$or": [{"b": ["2"]}, {"c": ["3"]}]}]}
    assert compile_policy(json.dumps(p)).combinations == 3
    assert m(p, {"c": "3"}) and m(p, {"a": "1"}) and not m(p, {"c": "4"})


def test_prefix_suffix_equals_ignore_case():
    assert m({"c": [{"prefix": "bas"}]}, {"c": "baseball"})
    assert not m({"c": [{"prefix": "bas"}]}, {"c": "rugby"})
    assert m({"c": [{"suffix": "ball"}]}, {"c": "baseball"})
    assert not m({"c": [{"suffix": "ball"}]}, {"c": "rugby"})
    assert m({"c": [{"equals-ignore-case": "RuGbY"}]}, {"c": "rugby"})
    assert not m({"c": [{"equals-ignore-case": "rugby"}]}, {"c": "rugby league"})
    assert not m({"c": [{"prefix": "1"}]}, {"c": 12})  # strings only


def test_anything_but_values():
    p = {"c": [{"anything-but": ["rugby", "tennis"]}]}
    assert m(p, {"c": "baseball"})
    assert not m(p, {"c": "rugby"})
    assert not m(p, {"c": ["rugby", "baseball"]})  # none of the elements may be excluded
    assert m(p, {"c": ["golf", "baseball"]})
    assert not m(p, {"other": "x"})  # needs the key
    assert m({"price": [{"anything-but": [100, 500]}]}, {"price": 100.1})
    assert not m({"price": [{"anything-but": [100, 500]}]}, {"price": 100})
    assert m({"price": [{"anything-but": 100}]}, {"price": 101})
    # with exists false, an absent key passes too
    q = {"c": [{"anything-but": ["rugby"]}, {"exists": False}]}
    assert m(q, {"other": "x"}) and m(q, {"c": "golf"}) and not m(q, {"c": "rugby"})


def test_anything_but_prefix():
    p = {"event": [{"anything-but": {"prefix": "order-"}}]}
    assert m(p, {"event": "data-entry"})
    assert not m(p, {"event": "order-cancelled"})
    assert not m(p, {"x": "data"})


def test_numeric_ranges():
    p = {"price": [{"numeric": [">", 0, "<=", 150]}]}
    assert m(p, {"price": 150}) and m(p, {"price": 0.00001})
    assert not m(p, {"price": 0}) and not m(p, {"price": 150.00001})
    assert not m(p, {"price": "100"})
    assert m({"p": [{"numeric": ["=", 301.5]}]}, {"p": 301.5})
    assert m({"p": [{"numeric": [">=", 10]}]}, {"p": 10})
    assert not m({"p": [{"numeric": ["<", 10]}]}, {"p": 10})
    assert m({"p": [{"numeric": ["<=", 10]}]}, {"p": [20, 5]})  # one element in range


def test_exists():
    assert m({"store": [{"exists": True}]}, {"store": "fans"})
    assert not m({"store": [{"exists": True}]}, {"other": "x"})
    assert not m({"store": [{"exists": True}]}, {"store": None})
    assert m({"store": [{"exists": False}]}, {"other": "x"})
    assert not m({"store": [{"exists": False}]}, {"store": "fans"})
    assert not m({"store": [{"exists": False}]}, {})  # no attributes: no match, as SNS


def test_cidr():
    p = {"source_ip": [{"cidr": "10.0.0.0/24"}]}
    assert m(p, {"source_ip": "10.0.0.255"})
    assert not m(p, {"source_ip": "10.0.1.0"})
    assert not m(p, {"source_ip": "not an ip"})
    assert m({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"})
    assert not m({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "10.0.0.1"})


def test_body_scope_nested_keys():
    p = {"store": {"country": ["US"], "city": [{"prefix": "New"}]}, "total": [{"numeric": [">", 5]}]}
    doc = {"store": {"country": "US", "city": "New York"}, "total": 6}
    assert m(p, doc, "body")
    assert not m(p, {"store": {"country": "US", "city": "Boston"}, "total": 6}, "body")
    # arrays of objects are searched element by element
    arr = {"items": {"sku": ["a1"]}}
    assert m(arr, {"items": [{"sku": "b2"}, {"sku": "a1"}]}, "body")
    assert not m(arr, {"items": [{"sku": "b2"}]}, "body")
    assert not m(p, [1, 2], "body")  # a body that is not an object matches nothing


def test_field_table_policy():
    from amqpbroker.values import FieldTable
    t = FieldTable({"a": ["x", FieldTable({"numeric": [">", Decimal("1.5")]})]})
    p = compile_policy(t)
    assert p.match({"a": "x"}) and p.match({"a": 2}) and not p.match({"a": 1})


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("policy, text", [
    ("{", "not valid JSON"),
    ("[1]", "must be a JSON object"),
    ("{}", "empty"),
    ('{"a": []}', "key 'a': an empty array"),
    ('{"a": [["x"]]}', "array inside the array"),
    ('{"a": [{"bogus": 1}]}', "unknown operator 'bogus'"),
    ('{"a": [{"prefix": "x", "suffix": "y"}]}', "exactly one key"),
    ('{"a": [{"prefix": 1}]}', "'prefix' expects a string"),
    ('{"a": [{"numeric": [">", "1"]}]}', "'numeric' expects"),
    ('{"a": [{"numeric": ["<", 1, ">", 0]}]}', "lower bound"),
    ('{"a": [{"numeric": [">", 5, "<", 1]}]}', "not below"),
    ('{"a": [{"numeric": [">", 2000000000]}]}', "outside -10^9..10^9"),
    ('{"a": [1e10]}', "outside"),
    ('{"a": [NaN]}', "invalid number NaN"),
    ('{"a": [{"exists": 1}]}', "'exists' expects true or false"),
    ('{"a": [{"cidr": "10.0.0.0/33"}]}', "invalid cidr"),
    ('{"a": [{"anything-but": []}]}', "at least one value"),
    ('{"a": [{"anything-but": {"suffix": "x"}}]}', "'anything-but' takes values"),
    ('{"a": [{"anything-but": [true]}]}', "takes strings and numbers"),
    ('{"a": {"b": ["x"]}}', "nested keys need x-filter-policy-scope body"),
    ('{"$or": [{"a": ["x"]}, {}]}', "an empty object among the $or branches"),
])
def test_invalid_policies_name_the_problem(policy, text):
    with pytest.raises(PolicyError, match=None) as e:
        compile_policy(policy)
    assert text in str(e.value)


def test_invalid_scope():
    with pytest.raises(PolicyError, match="x-filter-policy-scope"):
        compile_policy('{"a": ["x"]}', "MessageBody")


def test_limits_keys():
    five = {k: ["x"] for k in "abcde"}
    assert compile_policy(json.dumps(five)).keys == 5
    with pytest.raises(PolicyError, match="6 keys in one combination; at most 5"):
        compile_policy(json.dumps({**five, "f": ["x"]}))
    # body scope counts the top-level keys only (nested keys do not count)
    nested = {"a": {k: ["x"] for k in "pqrstuv"}}
    assert compile_policy(json.dumps(nested), "body").keys == 1
    # $or: the keys of one combination (the widest branch)
    p = {"a": ["x"], "$or": [{"b": ["1"], "c": ["1"]}, {"d": ["1"]}]}
    assert compile_policy(json.dumps(p)).keys == 3


def test_limits_combinations():
    ok = {"a": list("0123456789"), "b": list("0123456789")[:5], "c": ["x", "y", "z"]}
    assert compile_policy(json.dumps(ok)).combinations == 150
    with pytest.raises(PolicyError, match="151 value combinations; at most 150"):
        compile_policy(json.dumps({"a": [str(i) for i in range(151)]}))
    # $or branches add: source x (3 + 2) = 5
    p = {"s": ["1"], "$or": [{"m": ["a", "b", "c"]}, {"n": ["a", "b"]}]}
    assert compile_policy(json.dumps(p)).combinations == 5


def test_size_limit():
    big = json.dumps({"a": ["x" * (256 * 1024)]})
    with pytest.raises(PolicyError, match="larger than 256 KB"):
        compile_policy(big)


# --------------------------------------------------------------------------- the model


def _dnf(obj: dict, path: tuple) -> list[list[tuple]]:
    """The policy as an OR of ANDs of (path, conditions)."""
    terms = [[]]
    for k, v in obj.items():
        if is_or(k, v):
            options = [t for b in v for t in _dnf(b, path)]
        elif isinstance(v, dict):
            options = _dnf(v, path + (k,))
        else:
            options = [[(path + (k,), v if isinstance(v, list) else [v])]]
        terms = [t + o for t in terms for o in options]
    return terms


def _values(doc, path):
    if not path:
        return [doc]
    if isinstance(doc, list):
        return [x for d in doc for x in _values(d, path)]
    if not isinstance(doc, dict) or path[0] not in doc:
        return []
    v = doc[path[0]]
    if len(path) == 1:
        return list(v) if isinstance(v, list) else [v]
    return [x for d in (v if isinstance(v, list) else [v]) for x in _values(d, path[1:])]


def _isnum(v):
    return type(v) in (int, float, Decimal)


def _eqnum(a, b):
    return round(float(a), 5) == round(float(b), 5)


def _ok(c, vals) -> bool:
    import ipaddress
    if isinstance(c, str):
        return any(type(v) is str and v == c for v in vals)
    if isinstance(c, bool) or c is None:
        return any(type(v) is type(c) and v == c for v in vals)
    if _isnum(c):
        return any(_isnum(v) and _eqnum(v, c) for v in vals)
    (op, arg), = c.items()
    strs = [v for v in vals if type(v) is str]
    if op == "prefix":
        return any(v[:len(arg)] == arg for v in strs)
    if op == "suffix":
        return any(v[len(v) - len(arg):] == arg for v in strs if len(v) >= len(arg))
    if op == "equals-ignore-case":
        return any(v.casefold() == arg.casefold() for v in strs)
    if op == "exists":
        return any(v is not None for v in vals) == arg
    if op == "cidr":
        net = ipaddress.ip_network(arg, strict=False)
        hits = []
        for v in strs:
            try:
                hits.append(ipaddress.ip_address(v) in net)
            except ValueError:
                pass
        return any(hits)
    present = [v for v in vals if v is not None]
    if op == "anything-but":
        if not present:
            return False
        if isinstance(arg, dict):
            return all(type(v) is str and not v.startswith(arg["prefix"]) for v in present)
        banned = arg if isinstance(arg, list) else [arg]
        return not any((type(v) is str and v in [b for b in banned if isinstance(b, str)])
                       or (_isnum(v) and any(_isnum(b) and _eqnum(v, b) for b in banned))
                       for v in present)
    assert op == "numeric"
    ops = {"=": lambda a, b: a == b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
           ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
    return any(_isnum(v) and all(ops[arg[i]](round(float(v), 5), round(arg[i + 1], 5))
                                 for i in range(0, len(arg), 2)) for v in vals)


def reference(policy: dict, doc) -> bool:
    if not isinstance(doc, dict) or not doc:
        return False
    return any(all(any(_ok(c, _values(doc, path)) for c in conds) for path, conds in term)
               for term in _dnf(policy, ()))


KEYS = ["a", "b"]
SCALARS = st.sampled_from(["x", "xy", "yx", "X", "", "10.0.0.1", "10.0.1.1", 0, 1, 2.5,
                           -3, 100, True, False, None])
EXACT = st.sampled_from(["x", "xy", "X", "10.0.0.1", 0, 1, 2.5, True, False, None])
CONDITIONS = st.one_of(
    EXACT,
    st.builds(lambda p: {"prefix": p}, st.sampled_from(["x", "y", ""])),
    st.builds(lambda p: {"suffix": p}, st.sampled_from(["x", "y", ".1"])),
    st.builds(lambda p: {"equals-ignore-case": p}, st.sampled_from(["x", "XY"])),
    st.builds(lambda p: {"anything-but": p}, st.one_of(
        st.sampled_from(["x", 1]), st.lists(st.sampled_from(["x", "xy", 1, 2.5]), min_size=1,
                                            max_size=3),
        st.builds(lambda p: {"prefix": p}, st.sampled_from(["x", "1"])))),
    st.builds(lambda p: {"numeric": p}, st.sampled_from(
        [["=", 1], [">", 0], ["<", 1], [">=", 1], ["<=", 2.5], [">", 0, "<=", 2.5],
         [">=", -3, "<", 1]])),
    st.builds(lambda p: {"exists": p}, st.booleans()),
    st.builds(lambda p: {"cidr": p}, st.sampled_from(["10.0.0.0/24", "10.0.0.0/16"])),
)
LEAF = st.one_of(st.lists(CONDITIONS, min_size=1, max_size=2), EXACT)


def policies(nested: bool):
    def obj(children):
        body = st.dictionaries(st.sampled_from(KEYS), children, min_size=1, max_size=2)
        orr = st.lists(body, min_size=2, max_size=2)
        return st.builds(lambda d, o: {**d, "$or": o} if o else d, body,
                         st.one_of(st.none(), orr))
    if not nested:
        return obj(LEAF)
    return obj(st.one_of(LEAF, st.dictionaries(st.sampled_from(KEYS), LEAF, min_size=1,
                                                max_size=2)))


_FLAT = [_MISSING := object(), "x", "xy", "yx", "X", "", "10.0.0.1", "10.0.1.1", 0, 1, 2.5,
         -3, 100, True, False, None, ["x", "yx"], ["xy", 1], [1, 2.5], []]
_NESTED = _FLAT + [{"a": "x"}, {"a": 1, "b": "xy"}, [{"a": "yx"}, {"a": 2.5}], {"b": None}]


def docs(nested: bool) -> list[dict]:
    """Every document over keys a and b (and one with only an unrelated key): each policy
    is checked against all of them, so matches are as common as misses."""
    values = _NESTED if nested else _FLAT
    out = [{"z": "x"}, {}]
    for va in values:
        for vb in values:
            out.append({k: v for k, v in (("a", va), ("b", vb)) if v is not _MISSING})
    return out


def _model(policy, docs, scope):
    try:
        compiled = compile_policy(json.dumps(policy), scope)
    except PolicyError as e:  # only the limits may refuse what the grammar builds
        terms = _dnf(policy, ())
        combos = sum(len(t) and __import__("math").prod(len(c) for _p, c in t) for t in terms)
        assert "combinations" in str(e) and combos > 150 or "keys" in str(e), e
        return
    terms = _dnf(policy, ())
    import math
    assert compiled.combinations == sum(math.prod(len(c) for _p, c in t) for t in terms)
    for doc in docs:
        assert compiled.match(doc) == reference(policy, doc), (policy, doc)


@settings(max_examples=300, deadline=None)
@given(policies(False))
def test_model_headers_scope(policy):
    _model(policy, docs(False), "headers")


@settings(max_examples=300, deadline=None)
@given(policies(True))
def test_model_body_scope(policy):
    _model(policy, docs(True), "body")
