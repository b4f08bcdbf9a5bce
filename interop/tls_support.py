"""Shared by the amqps tests: the CI's certificates (``AMQP_TLS_DIR``) or ones made here,
our broker with a TLS listener, the reference RabbitMQ's (``AMQP_REFERENCE_TLS_URL``), and
client contexts that check the host name."""
from __future__ import annotations

import os
import re
import ssl
import time
import urllib.parse
from pathlib import Path

import pika
import pytest

from conftest import Broker, start_amqpbroker, stop

REFERENCE_TLS_URL = os.environ.get("AMQP_REFERENCE_TLS_URL")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict:
    """The CI's certificates, or ones of our own when not run by .ci/run."""
    d = os.environ.get("AMQP_TLS_DIR")
    if d:
        d = Path(d)
        return {k: str(d / f) for k, f in (("ca", "ca.pem"), ("cert", "server.pem"),
                                            ("key", "server.key"), ("client", "client.pem"),
                                            ("client_key", "client.key"))}
    from tests.tlscerts import CA
    ca = CA(tmp_path_factory.mktemp("tls"))
    cert, key = ca.issue("server", "localhost", server=True)
    client, client_key = ca.issue("client", "guest")
    return {"ca": str(ca.path), "cert": cert, "key": key, "client": client,
            "client_key": client_key}


def start_tls_amqpbroker(tls_files: dict, tmp_path, extra: str = "") -> tuple:
    """Our broker with amqps beside the plain port; ``extra`` is more top-level YAML."""
    conf = tmp_path / "tls.yaml"
    conf.write_text(f"listen:\n  hosts: [127.0.0.1, '::1']\n  tls:\n    port: 0\n"
                    f"    certfile: {tls_files['cert']}\n    keyfile: {tls_files['key']}\n"
                    f"    cafile: {tls_files['ca']}\n    verify: peer\n" + extra)
    proc, port = start_amqpbroker("--config", str(conf))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(proc.log_lines):
            m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(amqps\)", line)
            if m:
                return proc, port, int(m.group(1))
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError("no amqps listener:\n" + "".join(proc.log_lines))


@pytest.fixture(scope="module")
def _tls_amqpbroker(tls_files, tmp_path_factory):
    proc, _port, tls_port = start_tls_amqpbroker(tls_files, tmp_path_factory.mktemp("b"))
    yield Broker("amqpbroker", f"amqps://guest:guest@localhost:{tls_port}/", "localhost",
                 tls_port, proc)
    stop(proc)


@pytest.fixture(params=["amqpbroker"] + (["rabbitmq"] if REFERENCE_TLS_URL else []))
def tls_broker(request) -> Broker:
    if request.param == "rabbitmq":
        m = request.node.get_closest_marker("amqpbroker_only")
        if m:
            pytest.skip(f"amqpbroker_only: {m.args[0]}")
        u = urllib.parse.urlparse(REFERENCE_TLS_URL)
        return Broker("rabbitmq", REFERENCE_TLS_URL, u.hostname, u.port or 5671)
    return request.getfixturevalue("_tls_amqpbroker")


def context(tls_files, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls_files["ca"])   # checks the host name
    if client_cert:
        ctx.load_cert_chain(tls_files["client"], tls_files["client_key"])
    return ctx


def pika_params(broker: Broker, ctx: ssl.SSLContext, host: str = "localhost"):
    return pika.ConnectionParameters(host=host, port=broker.port,
                                     ssl_options=pika.SSLOptions(ctx, "localhost"),
                                     connection_attempts=1, socket_timeout=5)
