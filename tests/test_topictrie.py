"""The incremental binding indexes (amqpbroker/topictrie.py, exchanges/) against brute
force: the topic trie against the reference matcher ``topic_match``, every exchange type's
index against a scan of its bindings after random binds and unbinds, and the per-destination
sets that queue and exchange deletion use."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pamqp import commands as C

from amqpbroker.exchanges import (EXCHANGE_TYPES, Binding, Decorator, Exchange,
                                  headers_match, split_topic, topic_match)
from amqpbroker.message import Message
from amqpbroker.topictrie import DestSet, TopicTrie
from amqpbroker.vhost import VirtualHost

# words that stress the matcher: empty words, literal "*" and "#" in keys, repeats
_pattern_word = st.sampled_from(["a", "b", "", "*", "#"])
_key_word = st.sampled_from(["a", "b", "", "c", "*", "#"])
_patterns = st.lists(st.lists(_pattern_word, max_size=6).map(tuple), max_size=12)
_keys = st.lists(st.lists(_key_word, max_size=7).map(tuple), min_size=1, max_size=8)


def brute(patterns, words) -> set:
    return {i for i, p in enumerate(patterns) if topic_match(p, words)}


class Dest:
    """A destination: the indexes use its identity, and ``bindings`` like a queue's."""

    def __init__(self, i):
        self.i = i
        self.bindings = {}


@given(_patterns, _keys)
@settings(max_examples=400)
def test_trie_matches_brute_force(patterns, keys):
    trie = TopicTrie()
    dests = [Dest(i) for i in range(len(patterns))]
    for p, d in zip(patterns, dests):
        trie.add(p, d)
    for words in keys:
        assert {d.i for d in trie.match(words).values()} == brute(patterns, words)


@given(st.lists(st.text("ab.*#", max_size=8), max_size=10),
       st.lists(st.text("ab.*#", max_size=8), min_size=1, max_size=6))
def test_trie_matches_brute_force_on_strings(patterns, keys):
    """Through split_topic, as the exchange does: "a..b", ".", "#.#", "" and friends."""
    trie = TopicTrie()
    split = [split_topic(p) for p in patterns]
    dests = [Dest(i) for i in range(len(patterns))]
    for p, d in zip(split, dests):
        trie.add(p, d)
    for key in keys:
        words = split_topic(key)
        assert {d.i for d in trie.match(words).values()} == brute(split, words)


@given(_patterns, st.data())
def test_trie_removal_matches_brute_force_and_prunes(patterns, data):
    trie = TopicTrie()
    dests = [Dest(i % 3) for i in range(len(patterns))]  # several patterns per destination
    for p, d in zip(patterns, dests):
        trie.add(p, d)
    order = data.draw(st.permutations(range(len(patterns))))
    live = set(range(len(patterns)))
    for i in order:
        trie.remove(patterns[i], dests[i])
        live.discard(i)
        words = data.draw(st.lists(_key_word, max_size=6).map(tuple))
        want = {id(dests[j]) for j in live if topic_match(patterns[j], words)}
        assert set(trie.match(words)) == want
    assert trie.root.children == {} and trie.root.ends is None


def test_trie_known_cases():
    trie = TopicTrie()
    cases = {"#": Dest(0), "a.#": Dest(1), "#.#": Dest(2), "a..b": Dest(3), "*": Dest(4),
             "": Dest(5), "a.*.b": Dest(6), "#.b": Dest(7)}
    for p, d in cases.items():
        trie.add(split_topic(p), d)

    def hit(key):
        return sorted(d.i for d in trie.match(split_topic(key)).values())
    assert hit("") == [0, 2, 5]          # '#' and '#.#' match zero words
    assert hit("a") == [0, 1, 2, 4]
    assert hit("a..b") == [0, 1, 2, 3, 6, 7]
    assert hit("a.x.b") == [0, 1, 2, 6, 7]
    assert hit(".") == [0, 2]
    assert hit("b") == [0, 2, 4, 7]


def test_many_hash_patterns_do_not_explode():
    trie = TopicTrie()
    d = Dest(0)
    trie.add(("#",) * 20 + ("z",), d)
    assert trie.match(("a",) * 60) == {}
    assert list(trie.match(("a",) * 60 + ("z",)).values()) == [d]


def test_destset_counts_bindings():
    s, q = DestSet(), Dest(0)
    s.add(q)
    s.add(q)
    assert list(s.dests.values()) == [q]
    assert s.remove(q) is False and list(s.dests.values()) == [q]
    assert s.remove(q) is True and not s and s.dests == {}


# ---------------------------------------------------------------------- every exchange type


def reference_route(ex: Exchange, rk: str, headers) -> set:
    out = set()
    for b in ex.bindings.values():
        if ex.type == "direct":
            ok = b.routing_key == rk
        elif ex.type in ("fanout", "x-message-deduplication"):  # (the latter as fanout)
            ok = True
        elif ex.type == "topic":
            ok = topic_match(split_topic(b.routing_key), split_topic(rk))
        else:
            ok = headers_match(b.arguments, headers)
        if ok:
            out.add(id(b.destination))
    return out


_rk = st.sampled_from(["", "a", "b", "a.b", "a..b", "*", "#", "a.*", "#.b", "a.#", "#.#"])
_args = st.sampled_from([{}, {"x-match": "all", "h": 1}, {"x-match": "any", "h": 1, "g": "v"},
                         {"h": None}, {"x-match": "all-with-x", "x-k": "y"}])
_op = st.tuples(st.booleans(), st.integers(0, 3), _rk, _args)


# the routing types (a Decorator needs its inner type's argument and routes through it:
# tests/test_exchange_types.py covers those)
@given(st.sampled_from(sorted(t for t, c in EXCHANGE_TYPES.items()
                              if not issubclass(c, Decorator))), st.lists(_op, max_size=40),
       st.lists(st.tuples(_rk, st.sampled_from([{}, {"h": 1}, {"h": 1.0, "g": "v"},
                                                {"x-k": "y"}])), min_size=1, max_size=5))
@settings(max_examples=300)
def test_incremental_index_equals_scan(type_, ops, probes):
    ex = EXCHANGE_TYPES[type_]("x", durable=False)
    dests = [Dest(i) for i in range(4)]
    for add, d, rk, args in ops:
        b = Binding(ex, dests[d], rk, args)
        if add:
            ex.add(b)
        else:
            ex.remove(b.key)
        for prk, headers in probes:
            msg = Message("x", prk, C.Basic.Properties(headers=headers).marshal(), b"")
            got = [id(d) for d in ex.route(msg, (prk,))]
            assert len(got) == len(set(got))   # each destination once
            assert set(got) == reference_route(ex, prk, headers)
        # the destinations' sets hold exactly the exchange's bindings to them
        assert {id(b) for d in dests for b in d.bindings} == \
            {id(b) for b in ex.bindings.values()}


def test_vhost_deletes_use_destination_indexes():
    vh = VirtualHost("/")
    q = vh.declare_queue("q", False, False, False, False, {}, None)
    src = vh.declare_exchange("src", "topic", False, False, False, False, {})
    dst = vh.declare_exchange("dst", "fanout", False, False, True, False, {})  # auto-delete
    vh.bind("src", q, "a.#", {})
    vh.bind("amq.direct", q, "k", {})
    vh.bind("src", dst, "b.*", {})
    vh.bind("amq.topic", dst, "#", {})
    assert set(q.bindings) == set(src.bindings.values()) - set(dst.incoming) | \
        set(vh.exchanges["amq.direct"].bindings.values())
    assert len(dst.incoming) == 2
    vh.delete_queue(q)
    assert not q.bindings and not vh.exchanges["amq.direct"].bindings
    assert [b.destination for b in src.bindings.values()] == [dst]
    vh.delete_exchange("src", False)
    assert len(dst.incoming) == 1 and "dst" in vh.exchanges
    vh.delete_exchange("dst", False)
    assert not vh.exchanges["amq.topic"].bindings
