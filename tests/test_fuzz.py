"""Fuzzing the sans-I/O core with real frames (issue 8, item 8).

Hypothesis builds valid field tables (every field type), property blocks and frames, then
mutates their bytes: flipped type tags, lengths past the data, truncations, continued
property flags, deep nesting, invalid UTF-8, huge timestamps, odd names.  What the core
may do with them: accept them, or close a channel or the connection with a reply code of
amqp-semantics.md section 3, never 541 INTERNAL_ERROR, and log no traceback.  And nothing
fails later: the fuzzed message then goes through TTL expiry with dead-lettering,
redelivery after its consumer drops (a delivery limit), length-limit overflow, delivery,
and a restart on the SQLite store (recovered from the same directory in-process).

Output is parsed as raw frames, not with pamqp: a client decoder is not what is tested.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import struct
import tempfile

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from amqpbroker.broker import Broker
from amqpbroker.store.sqlite import SQLiteStore
from tests.fuzz_strategies import (_mutate, faulty, ls, method, mutate_payload,
                                   mutations, odd_names, odd_value_props, payload_mutated,
                                   plain_any_user, plain_names, props_block, publish, responses,
                                   simple_tables, ss, structural_props, table, tables, u16,
                                   u32, u64, units, valid_parts, valid_props)
from tests.sim import PROTOCOL_HEADER, Client, connected

# reply codes a server may close with (amqp-semantics.md section 3), 541 excluded
ALLOWED = {320, 402, 403, 404, 405, 406, 501, 502, 503, 504, 505, 506, 530, 540}
PROFILE_EXAMPLES = settings.default.max_examples
# shrinking a failure takes 30 s or more here: only with FUZZ_SHRINK=1 (for a minimal
# reproduction), so that the known failures keep the suite fast
PHASES = tuple(Phase) if os.environ.get("FUZZ_SHRINK") else (
    Phase.explicit, Phase.reuse, Phase.generate)


def examples(n: int) -> settings:
    """``n`` examples in the deterministic profile; the explore profile's budget otherwise."""
    return settings(max_examples=n if os.environ.get("HYPOTHESIS_PROFILE", "deterministic")
                    == "deterministic" else PROFILE_EXAMPLES, phases=PHASES)


# ---------------------------------------------------------------------- the harness


def split(data: bytes) -> list[tuple[int, int, bytes]]:
    """Server output -> [(frame type, channel, payload)] (asserting whole frames)."""
    out, pos = [], 0
    if data.startswith(b"AMQP"):
        pos = 8
    while pos < len(data):
        ftype, ch, size = struct.unpack_from(">BHI", data, pos)
        assert data[pos + 7 + size] == 0xCE
        out.append((ftype, ch, data[pos + 7:pos + 7 + size]))
        pos += 8 + size
    return out


def closes(data: bytes) -> list[tuple[str, int]]:
    """The Connection.Close and Channel.Close frames in server output, with their codes."""
    found = []
    for ftype, _ch, p in split(data):
        if ftype == 1 and p[:4] in (b"\x00\x0a\x00\x32", b"\x00\x14\x00\x28"):
            found.append(("connection" if p[1] == 10 else "channel",
                          struct.unpack_from(">H", p, 4)[0]))
    return found


def check(data: bytes) -> list[tuple[str, int]]:
    found = closes(data)
    assert all(code in ALLOWED for _k, code in found), found
    return found


class Tracebacks(logging.Handler):
    """Collects every record logged with an exception by the broker."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        if record.exc_info:
            self.records.append(record)


@contextlib.contextmanager
def no_tracebacks():
    handler = Tracebacks()
    logger = logging.getLogger("amqpbroker")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, [r.getMessage() + "\n" + logging.Formatter().formatException(
        r.exc_info) for r in handler.records[:2]]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


class World:
    """A broker on a SQLite store in a fresh directory, with queues for each later fate of
    a message: TTL expiry, length limit, delivery limit (each dead-letters into `dlq`)
    and a headers exchange."""

    QUEUES = {"ttl": {"x-message-ttl": 100}, "lim": {"x-max-length": 1},
              "dl": {"x-delivery-limit": 1}}

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fuzz-", dir=SHM)
        self.open()
        vh = self.vh
        vh.declare_exchange("fan", "fanout", False, True, False, False, {})
        vh.declare_exchange("hdr", "headers", False, True, False, False, {})
        vh.declare_queue("dlq", False, True, False, False, {}, None)
        vh.declare_queue("hq", False, True, False, False, {}, None)
        vh.bind("hdr", vh.get_queue("hq"), "", {"x-match": "any", "k": "v", "d": 1})
        for name, args in self.QUEUES.items():
            args = {**args, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
            vh.bind("fan", vh.declare_queue(name, False, True, False, False, args, None), "", {})

    def open(self):
        self.store = SQLiteStore(self.dir)
        self.broker = Broker(store=self.store)
        self.vh = self.broker.vhosts["/"]
        self.clock = self.vh.clock = Clock()

    def client(self) -> Client:
        return connected(broker=self.broker)

    def restart(self):
        self.store.sync_blocking()
        self.store.close()
        self.open()

    def close(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def raw(c: Client, data: bytes = b"") -> bytes:
    if data:
        c.send_raw(data)
    return c.conn.data_to_send()


def innocent(c: Client, data: bytes) -> None:
    """Someone else's traffic: must see no close at all."""
    found = closes(raw(c, data))
    assert not found, found


def lifecycle(props: bytes, body: bytes = b"fuzz") -> int:
    """Publish a message with ``props`` (confirmed), then everything that can happen to it
    later.  Raises on any failure; returns how many messages `dlq` holds after the
    restart."""
    w = World()
    try:
        with no_tracebacks():
            fuzz = w.client()
            check(raw(fuzz, method(1, 85, 10, b"\x00")))  # confirm.select
            check(raw(fuzz, publish(1, b"fan", b"", props, body)))
            check(raw(fuzz, publish(1, b"hdr", b"", props, body)))
            w.store.sync_blocking()
            w.broker.after_sync()
            check(raw(fuzz))
            # length limit: an innocent publisher pushes the fuzzed message out of `lim`
            other = w.client()
            innocent(other, publish(1, b"", b"lim", props_block({0x1000: b"\x02"}), b"ok"))
            # delivery limit: its consumer drops; the next one gets it redelivered (with an
            # x-delivery-count header added), drops too, and it is dead-lettered
            for _ in range(2):
                consumer = w.client()
                innocent(consumer, method(1, 60, 20, u16(0) + ss(b"dl") + ss(b"c") + b"\x00"
                                          + table([])))
                consumer.conn.connection_lost()
            # TTL expiry, dead-lettered by the broker's timer
            w.clock.now += 1
            w.broker.scheduler.run_due(w.clock.now)
            # a restart from the same directory, then every queue delivered and acked
            fuzz.conn.connection_lost()
            other.conn.connection_lost()
            w.restart()
            dead = w.vh.queues["dlq"].message_count
            after = w.client()
            for q in (b"dlq", b"hq", b"ttl", b"lim", b"dl"):
                for _ in range(4):
                    innocent(after, method(1, 60, 70, u16(0) + ss(q) + b"\x00"))
            tag = ss(b"all")
            innocent(after, method(1, 60, 20, u16(0) + ss(b"dlq") + tag + b"\x00" + table([])))
            innocent(after, method(1, 60, 80, u64(0) + b"\x01"))
            after.conn.connection_lost()
            return dead
    finally:
        w.close()


# ---------------------------------------------------------------------- content


@examples(150)
@given(valid_parts, st.binary(max_size=64))
def test_valid_properties_every_field_type_survive_everything(parts, body):
    """A persistent message is dead-lettered three times (length limit, delivery limit,
    TTL) and the three copies survive the restart."""
    dead = lifecycle(props_block(parts), body)
    assert dead == (3 if parts.get(0x1000) == b"\x02" else 0)


@examples(150)
@given(structural_props)
def test_malformed_properties_are_refused_or_harmless(props):
    """Flipped tags, lengths past the data, truncations, continued flags, deep nesting."""
    lifecycle(props)


@examples(60)
@given(odd_value_props)
def test_odd_property_values_are_refused_or_harmless(props):
    """Invalid UTF-8 in shortstrs, table strings and keys; timestamps past datetime."""
    lifecycle(props)


def session(steps: list[bytes]) -> None:
    """A fuzzing client's steps, then the broker must still serve, time out, restart."""
    w = World()
    try:
        with no_tracebacks():
            fuzz = w.client()
            for step in steps:
                check(raw(fuzz, step))
            w.clock.now += 1
            w.vh.scheduler.run_due(w.clock.now)
            fuzz.tick(fuzz.now + 1000)
            check(fuzz.conn.data_to_send())
            fuzz.conn.connection_lost()
            for _ in range(2):
                other = w.client()
                innocent(other, method(1, 50, 10, u16(0) + ss(b"after") + b"\x02" + table([]))
                             + publish(1, b"", b"after", props_block({0x1000: b"\x02"}), b"b")
                             + method(1, 60, 70, u16(0) + ss(b"after") + b"\x01"))
                other.conn.connection_lost()
                w.restart()
    finally:
        w.close()


@examples(150)
@given(st.lists(faulty(units(plain_names, simple_tables, valid_props)), min_size=1,
                max_size=10))
def test_frame_faults_close_with_protocol_codes(steps):
    """Valid methods and content with frame-level faults: bad types, end octets, sizes,
    truncated payloads, content out of sequence, heartbeats with payloads, channels."""
    session(steps)


@examples(150)
@given(st.lists(units(odd_names, tables, valid_props), min_size=1, max_size=8))
def test_odd_names_and_every_argument_type_close_with_protocol_codes(steps):
    """Methods with any shortstr RabbitMQ takes as a name, and argument tables with every
    field type."""
    session(steps)


@examples(150)
@given(st.lists(payload_mutated(units(plain_names, simple_tables, valid_props)), min_size=1,
                max_size=8))
def test_mutated_method_payloads_close_with_protocol_codes(steps):
    """Byte mutations of method payloads and content headers (tags, lengths, cuts).  The
    argument tables are simple ones (every field type in arguments is the odd-names test's):
    in a run of the whole suite Hypothesis generated other examples than in a run of this
    file, and a test that must pass on main must not depend on which."""
    session(steps)


# ---------------------------------------------------------------------- handshake


def handshake_case(props, response, channel_max, frame_max, heartbeat, vhost, ops, which):
    mech, resp = response
    if which == 0:   # the client properties (the response is what the strategy made it)
        props = _mutate(props, ops)
    steps = [method(0, 10, 11, props + ss(mech) + ls(resp) + ss(b"en_US")),
             method(0, 10, 31, u16(channel_max) + u32(frame_max) + u16(heartbeat)),
             method(0, 10, 40, ss(vhost) + ss(b"") + b"\x00"), method(0, 20, 10, b"\x00")]
    if 0 < which < 3:
        steps[which] = mutate_payload(steps[which], ops)
    w = World()
    try:
        with no_tracebacks():
            fuzz = Client(broker=w.broker)
            check(raw(fuzz, PROTOCOL_HEADER))
            for step in steps:
                check(raw(fuzz, step))
            fuzz.tick(fuzz.now + 100)
            check(fuzz.conn.data_to_send())
            fuzz.conn.connection_lost()
            other = w.client()
            innocent(other, method(1, 60, 70, u16(0) + ss(b"dlq") + b"\x01"))
    finally:
        w.close()


handshake_rest = (st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1),
                  st.integers(0, 2**16 - 1), odd_names, mutations, st.integers(0, 5))


@examples(100)
@given(tables, responses, st.tuples(*handshake_rest))
def test_fuzzed_handshake_closes_with_protocol_codes(props, response, rest):
    """Start-Ok (client properties, PLAIN and AMQPLAIN responses with odd bytes, other
    mechanisms), Tune-Ok values, Connection.Open's vhost; one of them byte-mutated."""
    handshake_case(props, response, *rest)


@examples(40)
@given(plain_any_user, st.tuples(*handshake_rest))
def test_plain_login_with_any_user_name_bytes(response, rest):
    """PLAIN user names RabbitMQ refuses with 403, invalid UTF-8 among them."""
    handshake_case(table([]), response, *rest)
