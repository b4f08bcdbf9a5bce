"""Incremental binding indexes: a counted set of destinations, and the topic trie.

Bindings are added and removed one at a time, in O(1) (direct, fanout, headers) or O(words
of the pattern) (topic), never by rebuilding an index.  The trie is RabbitMQ's
(rabbit_exchange_type_topic and its trie tables): one edge per pattern word, ``*`` and ``#``
as ordinary edges that the matcher treats specially, the destinations on the node where a
pattern ends.  Routing walks only the edges a key's words can take, not every pattern.
"""
from __future__ import annotations


class DestSet:
    """The destinations of some bindings, each once, counted: two bindings to one queue
    (different arguments, say) keep it until both are gone.  ``dests`` (id -> destination)
    is what routing reads."""

    __slots__ = ("dests", "counts")

    def __init__(self):
        self.dests: dict[int, object] = {}
        self.counts: dict[int, int] = {}

    def add(self, dest) -> None:
        k = id(dest)
        n = self.counts.get(k, 0)
        self.counts[k] = n + 1
        if not n:
            self.dests[k] = dest

    def remove(self, dest) -> bool:
        """Forget one binding to ``dest``; True when the set is now empty."""
        k = id(dest)
        n = self.counts.get(k, 0) - 1
        if n > 0:
            self.counts[k] = n
        elif n == 0:
            del self.counts[k]
            del self.dests[k]
        return not self.counts

    def __bool__(self) -> bool:
        return bool(self.counts)


class _Node:
    __slots__ = ("children", "ends", "parent", "word")

    def __init__(self, parent, word):
        self.children: dict[str, _Node] = {}
        self.ends: DestSet | None = None  # destinations of the patterns ending here
        self.parent = parent
        self.word = word


class TopicTrie:
    """Patterns are tuples of words (``split_topic``); ``*`` matches exactly one word, ``#``
    zero or more; words may be empty."""

    def __init__(self):
        self.root = _Node(None, None)

    def add(self, pattern: tuple[str, ...], dest) -> None:
        node = self.root
        for w in pattern:
            child = node.children.get(w)
            if child is None:
                child = node.children[w] = _Node(node, w)
            node = child
        if node.ends is None:
            node.ends = DestSet()
        node.ends.add(dest)

    def remove(self, pattern: tuple[str, ...], dest) -> None:
        node = self.root
        for w in pattern:
            node = node.children.get(w)
            if node is None:
                return
        if node.ends is None or not node.ends.remove(dest):
            return
        node.ends = None
        # prune the branch up to the first node still in use
        while node.parent is not None and not node.children and node.ends is None:
            del node.parent.children[node.word]
            node = node.parent

    def match(self, words: tuple[str, ...]) -> dict[int, object]:
        """id -> destination of every pattern that matches ``words``."""
        out: dict[int, object] = {}
        self._walk(self.root, words, 0, len(words), out, set())
        return out

    def _walk(self, node: _Node, words, i: int, n: int, out: dict, seen: set) -> None:
        children = node.children
        hash_node = children.get("#")
        if hash_node is not None:
            # '#' takes zero or more words: continue after it at every later position,
            # each (node, position) once however many '#' paths lead there
            for j in range(i, n + 1):
                key = (id(hash_node), j)
                if key not in seen:
                    seen.add(key)
                    self._walk(hash_node, words, j, n, out, seen)
        if i == n:
            if node.ends is not None:
                out.update(node.ends.dests)
            return
        w = words[i]
        if w != "*" and w != "#":  # a literal "*" or "#" word is taken by the edges below
            child = children.get(w)
            if child is not None:
                self._walk(child, words, i + 1, n, out, seen)
        star = children.get("*")
        if star is not None:
            self._walk(star, words, i + 1, n, out, seen)
