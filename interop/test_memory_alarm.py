"""The memory alarm end to end: a publisher that fills the queues past the high watermark is
blocked (pika sees Connection.Blocked) and resumes when a consumer drains them."""
import os
import tempfile
import threading
import time

import pika
import pytest

from conftest import start_amqpbroker, stop

pytestmark = pytest.mark.amqpbroker_only("configures our broker's memory high watermark")


def test_publisher_blocked_above_watermark_and_released_after_drain():
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write("storage: {backend: memory}\nlimits: {memory_high_watermark_bytes: 2000000}\n")
    cfg.close()
    proc, port = start_amqpbroker("--config", cfg.name)
    try:
        params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=0,
                                           blocked_connection_timeout=None)
        conn = pika.BlockingConnection(params)
        events = []
        conn.add_on_connection_blocked_callback(lambda c, m: events.append(m.method.NAME))
        conn.add_on_connection_unblocked_callback(lambda c, m: events.append(m.method.NAME))
        ch = conn.channel()
        ch.queue_declare("big")
        body = b"x" * 10_000
        # ~5 MB queued: well past 2 MB; the broker blocks us within a monitor period
        deadline = time.monotonic() + 20
        sent = 0
        while "Connection.Blocked" not in events and time.monotonic() < deadline:
            ch.basic_publish("", "big", body)
            sent += 1
            conn.process_data_events(0)
        assert "Connection.Blocked" in events, f"not blocked after {sent} messages"
        # a second connection drains the queue; the alarm clears and we are unblocked
        other = pika.BlockingConnection(params)
        och = other.channel()
        got = 0
        while och.basic_get("big", auto_ack=True)[0] is not None:
            got += 1
        deadline = time.monotonic() + 10
        while "Connection.Unblocked" not in events and time.monotonic() < deadline:
            conn.process_data_events(0.1)
        assert events[-1] == "Connection.Unblocked"
        assert got > 150
        ch.basic_publish("", "big", b"after")   # publishing works again
        ch.queue_declare("big", passive=True)
        other.close()
        conn.close()
    finally:
        stop(proc)
        os.unlink(cfg.name)
