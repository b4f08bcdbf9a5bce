"""Instructions per message on the sans-I/O hot path, for before/after comparisons:

    valgrind --tool=callgrind python bench/hotpath_instr.py TREE N SCENARIO

TREE: the project checkout whose amqpbroker is measured (its tests/sim.py drives it);
SCENARIO: default (publish to a consumed queue, ack), headers (through a headers exchange
binding) or persistent (delivery-mode 2 to a durable queue on SQLite).  Run with N=0 and
N=2000 and divide the difference of the totals by 2000."""
import sys
sys.path.insert(0, sys.argv[1])
from pamqp import commands as C
from pamqp import frame as pframe
from pamqp import header as pheader, body as pbody
from tests.sim import Client
import amqpbroker
assert amqpbroker.__file__.startswith(sys.argv[1]), amqpbroker.__file__
N = int(sys.argv[2]); scenario = sys.argv[3]
import tempfile
from amqpbroker.broker import Broker
from amqpbroker.store.sqlite import SQLiteStore
broker = Broker(store=SQLiteStore(tempfile.mkdtemp())) if scenario == "persistent" else None
c = Client(broker=broker); c.handshake(); c.open_channel(1)
if scenario == "persistent":
    c.declare(1, "q", durable=True)
    ex, rk, props = "", "q", C.Basic.Properties(delivery_mode=2)
elif scenario == "headers":
    c.call(1, C.Exchange.Declare(exchange="h", exchange_type="headers"), "Exchange.DeclareOk")
    c.declare(1, "q")
    c.call(1, C.Queue.Bind(queue="q", exchange="h", arguments={"a": "b"}), "Queue.BindOk")
    ex, rk, props = "h", "", C.Basic.Properties(headers={"a": "b", "n": 5})
else:
    c.declare(1, "q")
    ex, rk, props = "", "q", C.Basic.Properties(content_type="text/plain")
c.call(1, C.Basic.Consume(queue="q", consumer_tag="t"), "Basic.ConsumeOk")
pub = b"".join(pframe.marshal(f, 1) for f in (C.Basic.Publish(exchange=ex, routing_key=rk),
      pheader.ContentHeader(0, 16, props), pbody.ContentBody(b"x" * 16)))
conn = c.conn
for i in range(N):
    conn.receive_data(pub, 0.0)
    conn.data_to_send()
    conn.receive_data(pframe.marshal(C.Basic.Ack(delivery_tag=i + 1), 1), 0.0)
assert c.broker.vhosts["/"].queues["q"].message_count == 0
