"""Publisher confirms as a tracker, after RabbitMQ's ``rabbit_confirms``: a channel in
confirm mode registers each publish's sequence number with the ticket its target queues
returned, and releases the confirms whose tickets are settled.

A ticket says when a queue's copy of a message is safe:

- ``SAFE`` (``True``): now (a transient message, a non-durable queue, a direct reply);
- an ``int`` g >= 1: once the vhost store's ``synced`` reaches g, the generation its write
  made (the classic durable queue and a persistent message).  A watermark, not a
  registration: the store knows nothing of confirms, and one comparison releases a run;
- a ``Pending``: when the queue calls ``settle(ok)``, at any later time (a JetStream PubAck,
  a paged write); ``ok=False`` turns the confirm into a nack;
- a ``list`` of these: a message routed to several queues (``join``).

``REFUSED`` (``False``) is a queue's refusal (``reject-publish`` overflow): a nack.  Every
accepted ticket is truthy and a refusal falsy: ``if not q.accept(msg, now)`` is a
refusal.  An int ticket belongs to the vhost's store; a queue
type with storage of its own reports through ``Pending``.

Confirms go out in publish order (a message waiting for the store holds back the ones
published after it), coalesced as RabbitMQ's ``rabbit_channel``: see ``coalesce``.
"""
from __future__ import annotations

from collections import deque

SAFE = True
REFUSED = False


class Pending:
    """A ticket its queue settles later.  ``settle`` may come from anywhere (a store
    callback, a timer); the trackers waiting for it call their ``wake``, and the settler
    then calls ``Broker.after_sync()`` so that the woken channels write their confirms (a
    settle during a client's ``receive_data`` is written at its end anyway)."""
    __slots__ = ("outcome", "_waiting")

    def __init__(self):
        self.outcome: bool | None = None   # None until settled
        self._waiting: list = []           # (tracker, entry) pairs

    def settle(self, ok: bool = True) -> None:
        if self.outcome is not None:
            return
        self.outcome = ok = bool(ok)
        waiting, self._waiting = self._waiting, []
        for tracker, entry in waiting:
            if not ok:
                entry[1] = False
            entry[3] -= 1
            if not entry[3] and tracker.wake is not None:
                tracker.wake()


def join(a, b):
    """The ticket of a message in two places: safe when both are."""
    if a is True:
        return b
    if b is True:
        return a
    if type(a) is int and type(b) is int:
        return a if a >= b else b
    return [*(a if type(a) is list else (a,)), *(b if type(b) is list else (b,))]


class ConfirmTracker:
    """One per channel in confirm mode.  ``store`` is the vhost's (its ``synced`` is the
    watermark of int tickets); ``wake()`` is called when a ``Pending`` that an entry waited
    for settles."""
    __slots__ = ("store", "wake", "seq", "entries")

    def __init__(self, store, wake=None):
        self.store = store
        self.wake = wake
        self.seq = 0                     # the last publish's sequence number
        # not yet confirmed, in publish order (empty: nothing to write, nothing to wait
        # for): (seq, ack?, store generation to reach, Pending tickets not yet settled).
        # A tuple unless a Pending must change it later: the garbage collector untracks
        # tuples of ints, but a list stays tracked, and thousands of them outliving a
        # collection made full collections (which walk every queued message) frequent:
        # persistent + confirms lost 13 % at 16 B, more as the queue grew.
        self.entries: deque = deque()

    def __len__(self) -> int:
        return len(self.entries)

    def publish(self, ticket) -> int:
        """Register the next publish with its ticket (or REFUSED); returns its number."""
        self.seq = seq = self.seq + 1
        if ticket is True:
            self.entries.append((seq, True, 0, 0))
        elif type(ticket) is int:
            self.entries.append((seq, True, ticket, 0))
        elif ticket is False:
            self.entries.append((seq, False, 0, 0))
        else:
            entry = [seq, True, 0, 0]
            for t in ticket if type(ticket) is list else (ticket,):
                if t is True:
                    continue
                if type(t) is int:
                    if t > entry[2]:
                        entry[2] = t
                elif t.outcome is None:
                    entry[3] += 1
                    t._waiting.append((self, entry))
                elif not t.outcome:
                    entry[1] = False
            self.entries.append(entry if entry[3] else tuple(entry))
        return seq

    def release(self):
        """The confirms to write now, as (delivery tag, multiple, ack): the settled run at
        the front, coalesced.  What stays waits for a sync or a settle."""
        entries = self.entries
        if not entries:
            return ()
        synced = self.store.synced
        if len(entries) == 1:  # the usual case: one publish per read
            seq, ack, gen, waits = entries[0]
            if gen > synced or waits:
                return ()
            entries.clear()
            # as coalesce: a lone ack is single, a lone nack multiple=true
            return ((seq, not ack, ack),)
        n = 0
        for _seq, _ack, gen, waits in entries:
            if gen > synced or waits:
                break
            n += 1
        if not n:
            return ()
        done = [entries.popleft() for _ in range(n)]
        return coalesce(done, entries[0][0] if entries else None)

    def clear(self) -> None:
        """The channel is closing: nothing more will be confirmed (a Pending settled later
        finds its entry gone from here and changes nothing that is sent)."""
        self.entries.clear()


def coalesce(done: list, waiting: int | None) -> list[tuple[int, bool, bool]]:
    """RabbitMQ's send_confirms / coalesce_and_send (rabbit_channel): a lone ack is single;
    otherwise the tags below the smallest still unconfirmed publish (``waiting``) and below
    the other outcome's tags go as one multiple=true, the rest one by one; acks first."""
    acks = [e[0] for e in done if e[1]]
    nacks = [e[0] for e in done if not e[1]]
    out = []
    for seqs, others, ack in ((acks, nacks, True), (nacks, acks, False)):
        if not seqs:
            continue
        below = 0   # how many go as one multiple=true
        if not ack or len(seqs) > 1:
            cutoff = min(waiting if waiting is not None else seqs[-1] + 1,
                         others[0] if others else seqs[-1] + 1)
            below = sum(1 for seq in seqs if seq < cutoff)
        if below:
            out.append((seqs[below - 1], True, ack))
        out.extend((seq, False, ack) for seq in seqs[below:])
    return out
