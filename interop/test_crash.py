"""Crash tests: SIGKILL the broker in the middle of a workload, restart it on the same data
directory, and check that no confirmed message is lost.

The workload, per round: several publishers send persistent messages with publisher
confirms through a durable exchange to a durable queue; a consumer acks most of them and
rejects (requeue=false) every fifth, which the queue dead-letters through a durable DLX into a
second durable queue, whose consumer acks them.  At a random moment the broker is killed with
SIGKILL and restarted on the same directory (the topology is NOT redeclared: it must have
been recovered).  A last round without a kill drains both queues, stops the broker cleanly and
restarts it once more to check that nothing is left.

Checked:
- every confirmed message is delivered at least once from the work queue, and every confirmed
  message that is to be rejected is delivered at least once from the dead-letter queue;
- every delivery is intact (the body carries its id and a SHA-256 checksum; message-id and a
  header survive, dead-lettering adds x-death);
- a message recovered after a restart comes with redelivered=true;
- a message settled (acked / rejected) more than SETTLE_MARGIN seconds before a kill never
  comes back; the number settled just before a kill that came back is printed.

test_sigkill_while_dead_lettering (below) kills the broker while messages are being
dead-lettered, in each of the four ways.

CRASH_ROUNDS (default 3) sets the number of kills; CRASH_SEED the random seed.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
import tempfile
import threading
import time

import pika
import pika.exceptions
import pytest

from conftest import start_amqpbroker, stop

pytestmark = pytest.mark.amqpbroker_only("kills and restarts our own broker process")

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "3"))
SEED = int(os.environ.get("CRASH_SEED", str(random.randrange(1 << 30))))
PUBLISHERS = 3
REJECT_EVERY = 5
SETTLE_MARGIN = 1.0     # seconds: settled this long before a kill must have been committed

EXCHANGE, WORK, DLX, DEAD = "crash-in", "crash-work", "crash-dlx", "crash-dead"


def make_body(mid: str, rng: random.Random) -> bytes:
    payload = rng.randbytes(rng.choice((0, 10, 100, 1000, 20000)))
    rest = bytes([len(mid)]) + mid.encode() + payload
    return hashlib.sha256(rest).digest() + rest


def parse_body(body: bytes) -> str | None:
    """The message id, or None when the body is corrupt."""
    if len(body) < 33 or hashlib.sha256(body[32:]).digest() != body[:32]:
        return None
    n = body[32]
    return body[33:33 + n].decode()


def to_reject(mid: str) -> bool:
    return int(mid.rsplit("-", 1)[1]) % REJECT_EVERY == 0


class State:
    """What the clients saw, across every broker run (guarded by one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.round = 0
        self.kill_times: dict[int, float] = {}
        self.published_round: dict[str, int] = {}
        self.confirmed: set[str] = set()
        self.settled: dict[tuple[str, str], tuple[int, float]] = {}  # (queue, mid) -> when
        self.seen: dict[str, set[str]] = {WORK: set(), DEAD: set()}
        self.deliveries = {WORK: 0, DEAD: 0}
        self.duplicates = {WORK: 0, DEAD: 0}
        self.rejected_round: dict[str, int] = {}   # mid -> the last round it was rejected
        self.came_back = 0           # settled just before a kill, delivered again
        self.violations: list[str] = []

    def bad(self, text: str) -> None:
        self.violations.append(text)


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, connection_attempts=1, socket_timeout=5, blocked_connection_timeout=10,
        heartbeat=0))


def publisher(port: int, index: int, st: State, stop_ev: threading.Event,
              rng: random.Random) -> None:
    r = st.round
    n = 0
    try:
        conn = connect(port)
        ch = conn.channel()
        ch.confirm_delivery()
        while not stop_ev.is_set():
            n += 1
            mid = f"{r}-{index}-{n}"
            props = pika.BasicProperties(delivery_mode=2, message_id=mid,
                                         content_type="application/x-crash",
                                         headers={"mid": mid, "n": n})
            with st.lock:
                st.published_round[mid] = r
            ch.basic_publish(EXCHANGE, "work", make_body(mid, rng), props, mandatory=True)
            with st.lock:
                st.confirmed.add(mid)   # basic_publish returned: the broker confirmed it
    except (pika.exceptions.AMQPConnectionError, pika.exceptions.StreamLostError,
            pika.exceptions.ConnectionClosed, pika.exceptions.ChannelWrongStateError,
            ConnectionError, OSError):
        pass
    except pika.exceptions.UnroutableError:
        with st.lock:
            st.bad(f"publisher {index}: message {r}-{index}-{n} unroutable (binding lost?)")
    except pika.exceptions.NackError:
        with st.lock:
            st.bad(f"publisher {index}: message {r}-{index}-{n} nacked")


def consumer(port: int, queue: str, st: State, stop_ev: threading.Event,
             idle: dict) -> None:
    r = st.round
    try:
        conn = connect(port)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=50)
        for method, props, body in ch.consume(queue, inactivity_timeout=0.1):
            if stop_ev.is_set():
                break
            if method is None:
                idle.setdefault(queue, time.monotonic())
                continue
            idle.pop(queue, None)
            mid = parse_body(body)
            with st.lock:
                st.deliveries[queue] += 1
                if mid is None:
                    st.bad(f"{queue}: corrupt body {body[:60]!r}")
                    ch.basic_ack(method.delivery_tag)
                    continue
                if props.message_id != mid or (props.headers or {}).get("mid") != mid or \
                        props.content_type != "application/x-crash" or \
                        props.delivery_mode != 2:
                    st.bad(f"{queue}: properties of {mid} changed: {props}")
                if queue == DEAD and not (props.headers or {}).get("x-death"):
                    st.bad(f"{queue}: {mid} without x-death")
                if queue == DEAD and not to_reject(mid):
                    st.bad(f"{queue}: {mid} was never rejected")
                if mid not in st.published_round:
                    st.bad(f"{queue}: {mid} was never published")
                elif not method.redelivered and (
                        st.published_round[mid] < r if queue == WORK
                        else st.rejected_round.get(mid, r) < r):
                    # it was in the queue when the broker restarted: recovered
                    st.bad(f"{queue}: {mid} recovered with redelivered=false")
                if mid in st.seen[queue]:
                    st.duplicates[queue] += 1
                prev = st.settled.get((queue, mid))
                if prev is not None:
                    when_round, when = prev
                    if when_round == r:
                        st.bad(f"{queue}: {mid} delivered again after it was settled "
                               "in the same broker run")
                    elif when < st.kill_times[when_round] - SETTLE_MARGIN:
                        st.bad(f"{queue}: {mid} settled "
                               f"{st.kill_times[when_round] - when:.2f} s before the kill of "
                               f"round {when_round}, came back in round {r}")
                    else:
                        st.came_back += 1
                st.seen[queue].add(mid)
            if queue == WORK and to_reject(mid):
                with st.lock:
                    st.rejected_round[mid] = r  # before: its dead letter may come at once
                ch.basic_reject(method.delivery_tag, requeue=False)
            else:
                ch.basic_ack(method.delivery_tag)
            with st.lock:
                st.settled[(queue, mid)] = (r, time.monotonic())
        try:
            conn.close()
        except Exception:
            pass
    except (pika.exceptions.AMQPConnectionError, pika.exceptions.StreamLostError,
            pika.exceptions.ConnectionClosed, pika.exceptions.ChannelWrongStateError,
            pika.exceptions.ChannelClosed, ConnectionError, OSError, AssertionError):
        pass


def declare_topology(port: int) -> None:
    conn = connect(port)
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, "direct", durable=True)
    ch.exchange_declare(DLX, "fanout", durable=True)
    ch.queue_declare(WORK, durable=True, arguments={"x-dead-letter-exchange": DLX})
    ch.queue_declare(DEAD, durable=True)
    ch.queue_bind(WORK, EXCHANGE, "work")
    ch.queue_bind(DEAD, DLX, "")
    conn.close()


def check_topology(port: int) -> dict[str, int]:
    """Passive declares: the durable entities were recovered.  Returns message counts."""
    conn = connect(port)
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, passive=True)
    ch.exchange_declare(DLX, passive=True)
    counts = {q: ch.queue_declare(q, passive=True).method.message_count for q in (WORK, DEAD)}
    # the arguments too: an inequivalent redeclare would close the channel with 406
    ch.queue_declare(WORK, durable=True, arguments={"x-dead-letter-exchange": DLX})
    conn.close()
    return counts


def run_round(port: int, st: State, rng: random.Random, duration: float | None) -> None:
    """Run the workload; ``duration`` None: no publishers, until both queues are drained."""
    stop_ev = threading.Event()
    idle: dict[str, float] = {}
    threads = [threading.Thread(target=consumer, args=(port, q, st, stop_ev, idle), daemon=True)
               for q in (WORK, DEAD)]
    if duration is not None:
        threads += [threading.Thread(target=publisher,
                                     args=(port, i, st, stop_ev, random.Random(rng.random())),
                                     daemon=True)
                    for i in range(PUBLISHERS)]
    for t in threads:
        t.start()
    if duration is not None:
        time.sleep(duration)
        return_threads = threads
    else:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = time.monotonic()
            if all(q in idle and now - idle[q] > 0.5 for q in (WORK, DEAD)) and \
                    all(n == 0 for n in check_topology(port).values()):
                break
        stop_ev.set()
        for t in threads:
            t.join(10)
        return
    st._threads, st._stop = return_threads, stop_ev  # joined after the kill


def test_sigkill_loses_no_confirmed_message():
    rng = random.Random(SEED)
    data_dir = tempfile.mkdtemp(prefix="amqpbroker-crash-")
    st = State()
    proc, port = start_amqpbroker(data_dir=data_dir)
    declare_topology(port)
    started = time.monotonic()
    try:
        for r in range(1, ROUNDS + 1):
            st.round = r
            if r > 1:
                proc, port = start_amqpbroker(data_dir=data_dir)
                check_topology(port)
            run_round(port, st, rng, rng.uniform(0.3, 2.5))
            with st.lock:
                st.kill_times[r] = time.monotonic()
            proc.kill()   # SIGKILL
            proc.wait(10)
            st._stop.set()
            for t in st._threads:
                t.join(10)
        # the last round: no kill, drain everything, stop cleanly
        st.round = ROUNDS + 1
        proc, port = start_amqpbroker(data_dir=data_dir)
        check_topology(port)
        run_round(port, st, rng, None)
        stop(proc)
        assert proc.returncode == 0
        # after a clean stop every ack was committed: nothing comes back
        proc, port = start_amqpbroker(data_dir=data_dir)
        assert check_topology(port) == {WORK: 0, DEAD: 0}
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    lost_work = st.confirmed - st.seen[WORK]
    lost_dead = {m for m in st.confirmed if to_reject(m)} - st.seen[DEAD]
    print(f"\ncrash test: seed {SEED}, {ROUNDS} SIGKILL rounds in "
          f"{time.monotonic() - started:.1f} s; {len(st.published_round)} published, "
          f"{len(st.confirmed)} confirmed; deliveries {st.deliveries}; duplicates "
          f"{st.duplicates}; settled just before a kill and delivered again: {st.came_back}; "
          f"lost: {len(lost_work)} from {WORK}, {len(lost_dead)} from {DEAD}")
    assert not st.violations, "\n".join(st.violations[:20])
    assert not lost_work, f"confirmed but never delivered: {sorted(lost_work)[:20]}"
    assert not lost_dead, f"rejected but never dead-lettered: {sorted(lost_dead)[:20]}"
    assert len(st.confirmed) > 50 * ROUNDS, "the workload hardly ran"


# ====================================================================== dead-lettering
#
# Rounds that kill the broker while messages are being dead-lettered, one way per test:
# TTL expiry, reject (requeue=false), length limit (drop-head) and delivery limit, from a
# durable source queue through a durable fanout DLX into two durable targets, with
# persistent confirmed messages.  After the restart every confirmed message must be in its
# source or in BOTH targets (lost: neither, or one target only).  The store commits a dead
# letter's removal from the source and its copies in one transaction, so at-least-once is
# in fact exactly-once here: a message in its source and in a target, or twice in one queue,
# fails the test too.  Each way runs max(1, CRASH_ROUNDS // 3) rounds, a fresh broker each.

DL_ROUNDS = max(1, ROUNDS // 3)
DL_SRC, DL_FAN, DL_T1, DL_T2 = "dl-src", "dl-fan", "dl-t1", "dl-t2"
DL_WAYS = {
    # source arguments (besides the DLX) and what its consumer does
    "ttl": ({"x-message-ttl": 20}, None),
    "reject": ({}, "reject"),
    "maxlen": ({"x-max-length": 10}, None),
    "delivery_limit": ({"x-delivery-limit": 1}, "nack"),
}


def dl_declare(port: int, way: str) -> None:
    conn = connect(port)
    ch = conn.channel()
    ch.exchange_declare(DL_FAN, "fanout", durable=True)
    for t in (DL_T1, DL_T2):
        ch.queue_declare(t, durable=True)
        ch.queue_bind(t, DL_FAN, "")
    ch.queue_declare(DL_SRC, durable=True,
                     arguments={"x-dead-letter-exchange": DL_FAN, **DL_WAYS[way][0]})
    conn.close()


def dl_publisher(port: int, index: int, confirmed: set, published: set, lock,
                 stop_ev: threading.Event, rng: random.Random) -> None:
    n = 0
    try:
        conn = connect(port)
        ch = conn.channel()
        ch.confirm_delivery()
        while not stop_ev.is_set():
            n += 1
            mid = f"dl-{index}-{n}"
            with lock:
                published.add(mid)
            ch.basic_publish("", DL_SRC, make_body(mid, rng),
                             pika.BasicProperties(delivery_mode=2, message_id=mid))
            with lock:
                confirmed.add(mid)
    except (pika.exceptions.AMQPError, ConnectionError, OSError):
        pass


def dl_consumer(port: int, action: str, settled: list, stop_ev: threading.Event) -> None:
    try:
        conn = connect(port)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=20)
        for method, _props, _body in ch.consume(DL_SRC, inactivity_timeout=0.1):
            if stop_ev.is_set():
                break
            if method is None:
                continue
            time.sleep(0.003)  # slower than the publishers: a backlog is in the source too
            if action == "reject":
                ch.basic_reject(method.delivery_tag, requeue=False)
            else:
                ch.basic_nack(method.delivery_tag, requeue=True)
            settled.append(1)
    except (pika.exceptions.AMQPError, ConnectionError, OSError):
        pass


def dl_collect(port: int) -> dict[str, list[str]]:
    """Every message left in each queue (their ids, repeats kept), consumed with no-ack."""
    conn = connect(port)
    ch = conn.channel()
    found = {}
    for q in (DL_SRC, DL_T1, DL_T2):
        expected = ch.queue_declare(q, passive=True).method.message_count
        got = []
        for method, props, body in ch.consume(q, auto_ack=True, inactivity_timeout=1.0):
            if method is None:
                break
            mid = parse_body(body)
            assert mid is not None and props.message_id == mid, f"{q}: corrupt {body[:40]!r}"
            if q != DL_SRC:
                assert (props.headers or {}).get("x-death"), f"{q}: {mid} without x-death"
            got.append(mid)
            if len(got) >= expected:
                break
        ch.cancel()
        found[q] = got
    conn.close()
    return found


def dl_round(way: str, rng: random.Random) -> dict:
    data_dir = tempfile.mkdtemp(prefix="amqpbroker-crash-dl-")
    lock = threading.Lock()
    confirmed: set[str] = set()
    published: set[str] = set()
    settled: list = []
    proc, port = start_amqpbroker(data_dir=data_dir)
    try:
        dl_declare(port, way)
        stop_ev = threading.Event()
        threads = [threading.Thread(target=dl_publisher,
                                    args=(port, i, confirmed, published, lock, stop_ev,
                                          random.Random(rng.random())), daemon=True)
                   for i in range(2)]
        action = DL_WAYS[way][1]
        if action:
            threads.append(threading.Thread(target=dl_consumer,
                                            args=(port, action, settled, stop_ev), daemon=True))
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.5, 2.0))
        proc.kill()   # SIGKILL, while dead-lettering goes on
        proc.wait(10)
        stop_ev.set()
        for t in threads:
            t.join(10)
        proc, port = start_amqpbroker(data_dir=data_dir)
        if way == "ttl":  # what is left in the source expires after the restart
            conn = connect(port)
            deadline = time.monotonic() + 10
            while conn.channel().queue_declare(DL_SRC, passive=True).method.message_count \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            conn.close()
        found = dl_collect(port)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    where = {q: set(ids) for q, ids in found.items()}
    in_src = {m for m in confirmed if m in where[DL_SRC]}
    in_both = {m for m in confirmed if m in where[DL_T1] and m in where[DL_T2]}
    return {
        "confirmed": len(confirmed),
        "in_source": len(in_src - in_both),
        "in_every_target": len(in_both - in_src),
        "lost": sorted(confirmed - in_src - in_both),
        "half": sorted((confirmed & (where[DL_T1] ^ where[DL_T2])) - in_src),
        "source_and_target": sorted(in_src & (where[DL_T1] | where[DL_T2])),
        "repeated": sum(len(ids) - len(set(ids)) for ids in found.values()),
        "unconfirmed_found": len((where[DL_T1] | where[DL_SRC]) - confirmed),
        "settled_by_consumer": len(settled),
    }


@pytest.mark.parametrize("way", list(DL_WAYS))
def test_sigkill_while_dead_lettering(way):
    seed = SEED + list(DL_WAYS).index(way)
    rng = random.Random(seed)
    totals: dict = {}
    for _ in range(DL_ROUNDS):
        r = dl_round(way, rng)
        for k, v in r.items():
            totals[k] = totals.get(k, 0) + (len(v) if isinstance(v, list) else v)
        assert not r["lost"], f"{way}: confirmed, in neither source nor targets: {r['lost'][:10]}"
        assert not r["half"], f"{way}: in one target only: {r['half'][:10]}"
        assert not r["source_and_target"], \
            f"{way}: in the source and a target: {r['source_and_target'][:10]}"
        assert not r["repeated"], f"{way}: {r['repeated']} messages twice in one queue"
        assert r["in_every_target"] > 0, f"{way}: nothing was dead-lettered before the kill"
    print(f"\ncrash test, dead-lettering by {way}: seed {seed}, {DL_ROUNDS} SIGKILL rounds; "
          + ", ".join(f"{k} {v}" for k, v in totals.items()))
    assert totals["confirmed"] > 20 * DL_ROUNDS, "the workload hardly ran"
