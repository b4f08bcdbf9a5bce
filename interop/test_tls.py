"""amqps with real clients (pika, aio-pika, kombu), against our broker and the reference
RabbitMQ's TLS listener (``AMQP_REFERENCE_TLS_URL``, set up by .ci/run with the
certificates of ``AMQP_TLS_DIR``: a CA, a server certificate for localhost, 127.0.0.1 and
::1, a client certificate; RabbitMQ with verify_peer and fail_if_no_peer_cert = false,
which our ``verify: peer`` matches)."""
from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
import warnings
from pathlib import Path

import pika
import pytest

from conftest import Broker, stop
from tls_support import context, pika_params, start_tls_amqpbroker
# fixtures, used by name
from tls_support import _tls_amqpbroker, tls_broker, tls_files  # noqa: F401



@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
@pytest.mark.parametrize("client_cert", [False, True], ids=["no-client-cert", "client-cert"])
def test_pika_over_tls(tls_broker, tls_files, host, client_cert):
    conn = pika.BlockingConnection(pika_params(tls_broker, context(tls_files, client_cert),
                                               host))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"over tls " * 1000)
    method, _props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"over tls " * 1000
    conn.close()


def test_aio_pika_over_tls(tls_broker, tls_files):
    import aio_pika

    async def main():
        conn = await aio_pika.connect(tls_broker.url, ssl_context=context(tls_files))
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            q = await ch.declare_queue("", exclusive=True)
            await ch.default_exchange.publish(aio_pika.Message(b"hello"), routing_key=q.name)
            msg = await q.get(timeout=5)
            assert msg.body == b"hello"
            await msg.ack()
    asyncio.run(main())


def test_kombu_over_tls(tls_broker, tls_files):
    import kombu
    url = tls_broker.url.replace("amqps://", "amqp://")
    with kombu.Connection(url, ssl={"ca_certs": tls_files["ca"], "cert_reqs": ssl.CERT_REQUIRED,
                                    "server_hostname": "localhost"}) as conn:
        q = kombu.Queue("t-" + os.urandom(4).hex(), exclusive=True)
        with conn.Producer() as p:
            p.publish({"k": 1}, routing_key=q.name, declare=[q], serializer="json")
        with conn.SimpleQueue(q) as sq:
            assert sq.get(timeout=5).payload == {"k": 1}


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("old", ["tlsv1", "tlsv1.1"])
def test_tls_1_0_and_1_1_are_refused(tls_broker, tls_files, old):
    ctx = context(tls_files)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        v = ssl.TLSVersion.TLSv1 if old == "tlsv1" else ssl.TLSVersion.TLSv1_1
        ctx.minimum_version = ctx.maximum_version = v
    with pytest.raises(Exception) as e:
        pika.BlockingConnection(pika_params(tls_broker, ctx))
    assert "version" in str(e.value).lower() or "protocol" in str(e.value).lower() or \
        "ssl" in type(e.value).__name__.lower() or "connection" in type(e.value).__name__.lower()


def test_a_weak_cipher_is_refused(tls_broker, tls_files):
    ctx = context(tls_files)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA:@SECLEVEL=0")   # RSA key exchange, SHA-1: no secrecy
    with pytest.raises(Exception):
        pika.BlockingConnection(pika_params(tls_broker, ctx))


@pytest.mark.amqpbroker_only("sends SIGHUP to our own process")
def test_sighup_reloads_the_certificate_for_new_connections(tls_files, tmp_path):
    from tests.tlscerts import CA
    ca = CA(tmp_path)
    cert, key = ca.issue("server", "localhost", server=True)
    files = {**tls_files, "ca": str(ca.path), "cert": cert, "key": key}
    proc, _port, tls_port = start_tls_amqpbroker(files, tmp_path)
    try:
        b = Broker("amqpbroker", "", "localhost", tls_port, proc)
        old = pika.BlockingConnection(pika_params(b, context(files)))
        (tmp_path / "new").mkdir()
        other = CA(tmp_path / "new", "new CA")
        new_cert, new_key = other.issue("server", "localhost", server=True)
        Path(cert).write_bytes(Path(new_cert).read_bytes())
        Path(key).write_bytes(Path(new_key).read_bytes())
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any("reloaded the TLS certificate" in ln for ln in proc.log_lines):
            assert time.monotonic() < deadline, "".join(proc.log_lines)
            time.sleep(0.05)
        # the new certificate is served to new connections: the old CA no longer checks it
        with pytest.raises(Exception):
            pika.BlockingConnection(pika_params(b, context(files)))
        new = pika.BlockingConnection(pika_params(b, context({**files,
                                                             "ca": str(other.path)})))
        new.close()
        old.channel().queue_declare("", exclusive=True)   # the old connection lives on
        old.close()
        assert proc.poll() is None
    finally:
        stop(proc)


@pytest.mark.parametrize("client_cert", [False, True], ids=["no-client-cert", "client-cert"])
def test_node_amqplib_over_tls(tls_broker, tls_files, client_cert):
    import shutil

    from test_amqplib import NODE_DIR, run_scenario
    node = shutil.which("node")
    if not node or not (NODE_DIR / "node_modules" / "amqplib").exists():
        pytest.skip("Node amqplib interop needs node and interop/node's npm install")
    env = {"AMQP_TLS_CA": tls_files["ca"]}
    if client_cert:
        env.update(AMQP_TLS_CERT=tls_files["client"], AMQP_TLS_KEY=tls_files["client_key"])
    out = run_scenario(node, tls_broker, "basic", env=env)
    assert out["assertQueue"]["queue"] == out["_prefix"] + "-basic"
