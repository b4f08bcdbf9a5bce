"""The topic exchange: dot-separated words, ``*`` one word, ``#`` zero or more, matched by
the trie (topictrie.py) and cached per routing key until the bindings change."""
from __future__ import annotations

from ..topictrie import TopicTrie
from .base import Exchange


def split_topic(key: str) -> tuple[str, ...]:
    # empty words are allowed ("a..b" is a, "", b); the empty key has zero words
    return tuple(key.split(".")) if key else ()


def topic_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """``*`` matches exactly one word (possibly empty), ``#`` zero or more.  The reference
    for the trie's tests; routing uses the trie."""
    # iterative matcher with backtracking over the last '#'
    p = w = 0
    star_p, star_w = -1, 0
    while w < len(words):
        if p < len(pattern) and pattern[p] == "#":
            star_p, star_w = p, w
            p += 1
        elif p < len(pattern) and (pattern[p] == "*" or pattern[p] == words[w]):
            p += 1
            w += 1
        elif star_p >= 0:
            p = star_p + 1
            star_w += 1
            w = star_w
        else:
            return False
    while p < len(pattern) and pattern[p] == "#":
        p += 1
    return p == len(pattern)


class TopicExchange(Exchange):
    type = "topic"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._trie = TopicTrie()
        self._cache: dict[str, list] = {}  # routing key -> destinations, until a change

    def _added(self, b):
        self._trie.add(split_topic(b.routing_key), b.destination)
        if self._cache:
            self._cache = {}

    def _removed(self, b):
        self._trie.remove(split_topic(b.routing_key), b.destination)
        if self._cache:
            self._cache = {}

    def _match(self, routing_key: str) -> list:
        hit = self._cache.get(routing_key)
        if hit is None:
            hit = list(self._trie.match(split_topic(routing_key)).values())
            if len(self._cache) > 4096:
                self._cache = {}
            self._cache[routing_key] = hit
        return hit

    def route(self, msg, keys):
        if len(keys) == 1:
            return self._match(keys[0])
        found: dict[int, object] = {}
        for k in keys:
            for d in self._match(k):
                found[id(d)] = d
        return found.values()
