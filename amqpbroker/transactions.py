"""Transactions (tx.select / tx.commit / tx.rollback): publishes and settlements buffered
until commit; Tx.CommitOk waits for the store sync that covers what the commit wrote.
A mixin of ``channel.Channel``."""
from __future__ import annotations

from collections import OrderedDict

from . import errors
from . import methods as M
from .queues import QueueType


class Transactions:
    def _tx_select(self, m) -> None:
        if self.confirms is not None:
            raise errors.PreconditionFailed("cannot switch from confirm to tx mode", 90, 10)
        if self.tx is None:
            self.tx = []
        self.send_method(M.TX_SELECT_OK)

    def _tx_commit(self, m) -> None:
        if self.tx is None:
            raise errors.PreconditionFailed("channel is not transactional", 90, 20)
        work, self.tx = self.tx, []
        self._tx_release()
        touched: dict[int, QueueType] = {}
        store = self.vhost.store
        for item in work:
            if len(item) == 3:
                self._route(*item)
            else:
                self._apply_settle(item[0], item[1], touched)
        # after any Basic.Return; after the sync when persistent messages were written
        self.commit_ok_gen = store.gen
        self.conn.confirms_dirty.add(self)
        self._redispatch(touched)

    def _tx_rollback(self, m) -> None:
        if self.tx is None:
            raise errors.PreconditionFailed("channel is not transactional", 90, 30)
        work, self.tx = self.tx, []
        self._tx_release()
        # delivered messages whose acks are discarded stay unacked, in tag order
        restored = [(tag, entry) for item in work if len(item) == 2
                    for tag, entry in item[1]]
        if restored:
            merged = sorted([*self.unacked.items(), *restored])
            self.unacked = OrderedDict(merged)
        self.send_method(M.TX_ROLLBACK_OK)

    def _tx_release(self) -> None:
        """The transaction's publishes are routed or dropped: the connection holds them
        no more (limits.max_buffered_bytes)."""
        if self.tx_held:
            self.conn.hold(-self.tx_held)
            self.tx_held = 0
