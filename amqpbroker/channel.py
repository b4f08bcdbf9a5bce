"""Per-channel session: the state, the method table and the lifecycle.  The concerns are
mixins, one module each: ``content`` (frames into a message), ``publish`` (publish,
mandatory returns, confirms), ``replyto`` (direct reply-to), ``transactions``,
``delivery`` (consumers, delivery tags, settlement) and ``topology`` (exchange and queue
methods).  Mixins, not collaborator objects: the hot path stays plain method calls on one
object."""
from __future__ import annotations

from collections import OrderedDict

from pamqp import commands as C

from . import errors, framing
from . import methods as M
from .confirms import ConfirmTracker
from .content import ContentAssembly
from .delivery import Delivery
from .framing import Publish
from .metrics import ChannelCounters
from .publish import Publishing
from .queues import Consumer
from .replyto import DirectReplyTo
from .topology import Topology
from .transactions import Transactions


class Channel(ContentAssembly, Publishing, Delivery, DirectReplyTo, Transactions, Topology):
    def __init__(self, conn, number: int):
        self.conn = conn
        self.number = number
        self.closing = False          # sent Channel.Close, waiting for CloseOk
        self.vhost = conn.vhost
        # what every access.* check takes first (permissions are fixed for a connection)
        self.who = (conn.permissions, conn.vhost.name, conn.user.name)
        self.topics = conn.topic_permissions  # None: no topic permission (the usual case)
        self.counters = ChannelCounters()
        self.consumers: dict[str, Consumer] = {}
        self._targets: dict[str, object] = {}  # exchange name -> exchange, checks passed
        self.unacked: OrderedDict[int, tuple] = OrderedDict()  # tag -> (delivery, queue)
        self.pills: dict[int, Consumer] = {}  # unsettled poison pills: tag -> consumer
        self.prefetch_count = 0       # for consumers (global=false)
        self.global_prefetch = 0      # channel-wide (global=true)
        self.flow = True
        self.confirms: ConfirmTracker | None = None  # in confirm mode
        self.commit_ok_gen: int | None = None  # a Tx.CommitOk waiting for the store
        self.last_queue: str | None = None
        self.tx: list | None = None   # in tx mode: buffered publishes and settlements
        self.tx_held = 0              # their body bytes, held by the connection (limits)
        self.reply_token: str | None = None  # direct reply-to: our pseudo-queue suffix
        self.reply_consumer: str | None = None
        # content assembly: IDLE (None) -> header -> bodies
        self._publish: Publish | None = None
        self._props: bytes | None = None
        self._check = 0               # the properties need wirecheck.check_publish
        self._header = b""            # the content header payload as received
        self._size = 0
        self._parts: list[bytes] = []
        self._received = 0
        self._handlers = {
            "Basic.Qos": self._basic_qos,
            "Basic.Consume": self._basic_consume,
            "Basic.Cancel": self._basic_cancel,
            "Basic.Get": self._basic_get,
            "Basic.Recover": self._basic_recover,
            "Basic.RecoverAsync": self._basic_recover,
            "Exchange.Declare": self._exchange_declare,
            "Exchange.Delete": self._exchange_delete,
            "Exchange.Bind": self._exchange_bind,
            "Exchange.Unbind": self._exchange_bind,
            "Queue.Declare": self._queue_declare,
            "Queue.Bind": self._queue_bind,
            "Queue.Unbind": self._queue_bind,
            "Queue.Purge": self._queue_purge,
            "Queue.Delete": self._queue_delete,
            "Confirm.Select": self._confirm_select,
            "Channel.Flow": self._channel_flow,
            "Access.Request": self._access_request,
            "Basic.CancelOk": lambda m: None,  # answer to our server-sent Basic.Cancel
            "Tx.Select": self._tx_select,
            "Tx.Commit": self._tx_commit,
            "Tx.Rollback": self._tx_rollback,
        }

    # ------------------------------------------------------------------ output

    def send_method(self, method) -> None:
        """A pamqp method object, or a field-less method of ``methods`` (class, method)."""
        self.conn.send(M.simple(self.number, method) if type(method) is tuple
                       else framing.method_frame(self.number, method))

    def _queue_name(self, name: str) -> str:
        if name:
            return name
        if self.last_queue is None:
            raise errors.NotFound("no previously declared queue")
        return self.last_queue

    # ------------------------------------------------------------------ lifecycle

    def release(self) -> None:
        """The channel is gone: cancel its consumers, requeue its unacked messages."""
        self._publish = self._props = None
        if self._parts or self.tx_held:  # what the connection held for us is let go
            self.conn.hold(-sum(map(len, self._parts)) - self.tx_held)
            self.tx_held = 0
        self._parts = []
        consumers, self.consumers = list(self.consumers.values()), {}
        for c in consumers:
            self._remove_consumer(c)
        self._drop_reply_to()
        touched = self.requeue_all()
        self.tx = None
        now = self.vhost.clock()
        for q in touched.values():
            q.dispatch(now)
        if self.confirms is not None:
            self.confirms.clear()
        self.vhost.counters.retire(self.counters)  # (release runs once per channel)
        self.vhost.counters.channels_closed += 1

    # ------------------------------------------------------------------ methods

    def _access_request(self, m) -> None:
        self.conn.send(framing.access_request_ok(self.number))

    def _channel_flow(self, m: C.Channel.Flow) -> None:
        if not m.active:
            raise errors.NotImplemented_("active=false", 20, 20)
        self.send_method(C.Channel.FlowOk(active=True))

