"""Certificate login (SASL EXTERNAL) with real clients, on our broker and on the reference
RabbitMQ (its rabbitmq_auth_mechanism_ssl plugin; .ci/tls-certs configures it with
``auth_mechanisms`` PLAIN, AMQPLAIN, EXTERNAL and ``ssl_cert_login_from = common_name``, as
our broker is configured here). The CI's client certificate has CN ``guest``."""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import urllib.parse

import pika
import pytest
from pika.credentials import ExternalCredentials

from conftest import Broker, stop
from tls_support import REFERENCE_TLS_URL, context, start_tls_amqpbroker
from tls_support import tls_files  # noqa: F401  (a fixture, used by name)

EXTERNAL_YAML = ("auth_mechanisms: [PLAIN, AMQPLAIN, EXTERNAL]\n"
                 "ssl_cert_login_from: common_name\n")
REFUSED = ("ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. "
           "For details see the broker logfile.")


@pytest.fixture(scope="module")
def _external_amqpbroker(tls_files, tmp_path_factory):  # noqa: F811
    proc, port, tls_port = start_tls_amqpbroker(tls_files, tmp_path_factory.mktemp("x"),
                                                EXTERNAL_YAML)
    yield {"tls": Broker("amqpbroker", f"amqps://localhost:{tls_port}/", "localhost",
                         tls_port, proc), "plain_port": port}
    stop(proc)


@pytest.fixture(params=["amqpbroker"] + (["rabbitmq"] if REFERENCE_TLS_URL else []))
def ext(request) -> dict:
    """``tls``: the broker's amqps endpoint; ``plain_port``: its plain AMQP port."""
    if request.param == "rabbitmq":
        u = urllib.parse.urlparse(REFERENCE_TLS_URL)
        plain = urllib.parse.urlparse(os.environ.get("AMQP_REFERENCE_URL",
                                                     "amqp://127.0.0.1:5672/"))
        return {"tls": Broker("rabbitmq", f"amqps://{u.hostname}:{u.port or 5671}/",
                              u.hostname, u.port or 5671), "plain_port": plain.port or 5672}
    return request.getfixturevalue("_external_amqpbroker")


def external_params(broker: Broker, ctx: ssl.SSLContext) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(host="localhost", port=broker.port,
                                     credentials=ExternalCredentials(),
                                     ssl_options=pika.SSLOptions(ctx, "localhost"),
                                     connection_attempts=1, socket_timeout=5)


def offered_mechanisms(port: int, ctx: ssl.SSLContext | None) -> list[str]:
    """The mechanisms field of Connection.Start, read off the wire."""
    sock = socket.create_connection(("localhost", port), timeout=5)
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        data = b""
        while len(data) < 7 or len(data) < 8 + struct.unpack(">I", data[3:7])[0]:
            chunk = sock.recv(65536)
            assert chunk, "closed before Connection.Start"
            data += chunk
    body = data[7:]
    pos = 4 + 2                                         # class, method, version
    pos += 4 + struct.unpack(">I", body[pos:pos + 4])[0]  # server-properties
    n = struct.unpack(">I", body[pos:pos + 4])[0]
    return body[pos + 4:pos + 4 + n].decode().split()


def test_external_is_offered_on_tls_only(ext, tls_files):  # noqa: F811
    on_tls = offered_mechanisms(ext["tls"].port, context(tls_files))
    on_plain = offered_mechanisms(ext["plain_port"], None)
    # RabbitMQ 3.10 lists them in its registry's (ETS) order, which differs between nodes
    # (seen: "PLAIN AMQPLAIN EXTERNAL" and "EXTERNAL AMQPLAIN PLAIN"); we keep the configured order
    assert sorted(on_tls) == ["AMQPLAIN", "EXTERNAL", "PLAIN"]
    assert sorted(on_plain) == ["AMQPLAIN", "PLAIN"]
    if ext["tls"].kind != "rabbitmq":
        assert on_tls == ["PLAIN", "AMQPLAIN", "EXTERNAL"]


def test_pika_external_login_with_a_client_certificate(ext, tls_files):  # noqa: F811
    conn = pika.BlockingConnection(external_params(ext["tls"], context(tls_files, True)))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue    # guest's permissions apply
    ch.basic_publish("", q, b"by certificate")
    assert ch.basic_get(q, auto_ack=True)[2] == b"by certificate"
    conn.close()


def test_pika_external_without_a_certificate_is_refused_with_403(ext, tls_files):  # noqa: F811
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        pika.BlockingConnection(external_params(ext["tls"], context(tls_files)))
    assert f"(403) '{REFUSED}'" in str(e.value)


def test_aio_pika_external_login(ext, tls_files):  # noqa: F811
    import aio_pika

    async def main():
        url = ext["tls"].url + "?auth=external"
        conn = await aio_pika.connect(url, ssl_context=context(tls_files, True))
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue("", exclusive=True)
            await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key=q.name)
            assert (await q.get(timeout=5)).body == b"x"
    asyncio.run(main())


def test_py_amqp_external_login(ext, tls_files):  # noqa: F811
    import amqp
    conn = amqp.Connection(f"localhost:{ext['tls'].port}", login_method="EXTERNAL",
                           ssl={"ca_certs": tls_files["ca"], "cert_reqs": ssl.CERT_REQUIRED,
                                "certfile": tls_files["client"],
                                "keyfile": tls_files["client_key"],
                                "server_hostname": "localhost"}, connect_timeout=5)
    conn.connect()
    try:
        ch = conn.channel()
        q, _, _ = ch.queue_declare("", exclusive=True)
        ch.basic_publish(amqp.Message(b"y"), "", q)
        assert ch.basic_get(q, no_ack=True).body == b"y"
    finally:
        conn.close()


def test_distinguished_name_mapping(tls_files, tmp_path):  # noqa: F811
    """RabbitMQ's default: the user is the whole subject DN. The reference in CI runs with
    common_name, so only our broker is started this way (a user named ``CN=guest``)."""
    users = ("users:\n  - {name: CN=guest, password: unused-secret}\n"
             "permissions:\n  - {user: CN=guest, vhost: /, configure: '.*', write: '.*',"
             " read: '.*'}\n")
    proc, _port, tls_port = start_tls_amqpbroker(
        tls_files, tmp_path, "auth_mechanisms: [PLAIN, EXTERNAL]\n" + users)
    try:
        b = Broker("amqpbroker", "", "localhost", tls_port, proc)
        conn = pika.BlockingConnection(external_params(b, context(tls_files, True)))
        ch = conn.channel()
        ch.queue_declare("", exclusive=True)
        conn.close()
    finally:
        stop(proc)
