"""amqps in-process: a real Server with a TLS listener, real certificates (tlscerts.py)
and the standard library's ssl on the client side."""
from __future__ import annotations

import logging
import shutil
import ssl

import anyio
import pytest
from pamqp import commands as C

from amqpbroker import tls as tls_mod
from amqpbroker.config import TLS, Config, Limits, Listen, Storage, Management, Prometheus
from amqpbroker.server import Server

from .test_server_tasks import RawClient, serves
from .tlscerts import CA

OFF = Management(port=None)  # the reference RabbitMQ here holds 15672 and 15692
POFF = Prometheus(port=None)


@pytest.fixture
def pki(tmp_path):
    ca = CA(tmp_path)
    server = ca.issue("server", "localhost", server=True)
    client = ca.issue("client", "alice", org="amqpbroker")
    return ca, server, client


def client_context(ca: CA, cert=None, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))   # checks the host name
    if cert:
        ctx.load_cert_chain(*cert)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


async def amqps(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> RawClient:
    """RawClient's handshake over TLS."""
    stream = await anyio.connect_tcp(host, port, tls=True, ssl_context=ctx,
                                     tls_standard_compatible=False)
    c = RawClient(stream)
    await c.handshake()
    return c


def run_tls(tmp_path, server_cert, scenario, **tls) -> None:
    certfile, keyfile = server_cert
    config = Config(management=OFF, prometheus=POFF, listen=Listen(hosts=("127.0.0.1", "::1"), port=0,
                                  tls=TLS(certfile=certfile, keyfile=keyfile, port=0, **tls)),
                    storage=Storage(backend="memory"),
                    limits=Limits(memory_high_watermark_bytes=1 << 30))

    async def main():
        server = Server(config)
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            tls_port = server.ports_of["listen.tls.port"][0][1]
            await scenario(server, tls_port, server.ports_of["listen.port"][0][1])
            await serves(server.ports_of["listen.port"][0][1], "final")
            tg.cancel_scope.cancel()
    anyio.run(main)


def test_amqps_and_plain_side_by_side_with_host_name_checks(tmp_path, pki):
    ca, server_cert, _client = pki

    async def scenario(server, port, plain):
        for host in ("localhost", "127.0.0.1", "::1"):   # the certificate names all three
            known = set(server.connections.live)
            c = await amqps(port, client_context(ca), host)
            (conn,) = set(server.connections.live) - known
            assert conn.transport.tls and conn.transport.peer_certificate is None
            assert c.stream.extra(anyio.streams.tls.TLSAttribute.tls_version) in (
                "TLSv1.2", "TLSv1.3")
            await c.aclose()
        await serves(plain, "plain")
    run_tls(tmp_path, server_cert, scenario)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("fault", ["tls 1.1", "weak cipher", "garbage", "silence",
                                   "plain AMQP"])
def test_a_failed_handshake_is_one_line_and_disturbs_no_one(tmp_path, pki, caplog,
                                                           monkeypatch, fault):
    ca, server_cert, _client = pki
    monkeypatch.setattr(tls_mod, "HANDSHAKE_TIMEOUT", 0.5)
    caplog.set_level(logging.WARNING, "amqpbroker.server")

    async def scenario(server, port, plain):
        other = await amqps(port, client_context(ca))   # a connection that must live on
        if fault in ("tls 1.1", "weak cipher"):
            ctx = client_context(ca)
            if fault == "tls 1.1":
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")   # what an old client offers
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            else:   # no forward secrecy, SHA-1: not in the ssl module's server defaults
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_ciphers("AES128-SHA:@SECLEVEL=0")
            with pytest.raises((ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream,
                                OSError)):
                await amqps(port, ctx)
        else:
            s = await anyio.connect_tcp("127.0.0.1", port)
            if fault != "silence":
                await s.send(b"AMQP\x00\x00\x09\x01" if fault == "plain AMQP" else
                             b"\x16\x03\x01\x00\x05hello garbage" * 3)
            with anyio.fail_after(3):   # the server closes it (after 0.5 s when silent)
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                    while True:
                        await s.receive()
        await serves(plain, "plain")
        await other.send(1, C.Basic.Qos(prefetch_count=5))
        await other.expect("Basic.QosOk")
        await other.aclose()
        for _ in range(50):
            if any("TLS handshake from" in r.getMessage() for r in caplog.records):
                break
            await anyio.sleep(0.02)
    run_tls(tmp_path, server_cert, scenario)
    lines = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith("TLS handshake from 127.0.0.1:") and " failed: " in lines[0]
    assert not any(r.exc_info for r in caplog.records)
    ends = {"silence": "no handshake within 0.5 s", "tls 1.1": "UNSUPPORTED_PROTOCOL",
            "weak cipher": "NO_SHARED_CIPHER"}   # the server refused them, not the client
    assert lines[0].endswith(ends.get(fault, "")), lines


def test_verify_require_needs_a_client_certificate(tmp_path, pki):
    ca, server_cert, client = pki

    async def scenario(server, port, plain):
        known = set(server.connections.live)
        c = await amqps(port, client_context(ca, client))
        (conn,) = set(server.connections.live) - known
        subject = dict(x[0] for x in conn.transport.peer_certificate["subject"])
        assert subject == {"commonName": "alice", "organizationName": "amqpbroker"}
        await c.aclose()
        with pytest.raises((ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream,
                            OSError)):
            await amqps(port, client_context(ca))   # TLS 1.3 reports it at the first read
    run_tls(tmp_path, server_cert, scenario, cafile=str(ca.path), verify="require")


def test_verify_peer_checks_a_certificate_but_needs_none(tmp_path, pki):
    ca, server_cert, client = pki
    (tmp_path / "other").mkdir()
    stranger = CA(tmp_path / "other", "someone else").issue("stranger", "mallory")

    async def scenario(server, port, plain):
        c = await amqps(port, client_context(ca))   # none sent: fine
        await c.aclose()
        c = await amqps(port, client_context(ca, client))
        await c.aclose()
        with pytest.raises((ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream,
                            OSError)):
            await amqps(port, client_context(ca, stranger))   # sent, not ours: refused
    run_tls(tmp_path, server_cert, scenario, cafile=str(ca.path), verify="peer")


def test_reload_serves_a_new_certificate_to_new_connections_only(tmp_path, pki, caplog):
    ca, server_cert, _client = pki
    caplog.set_level(logging.INFO, "amqpbroker.server")

    async def scenario(server, port, plain):
        old = await amqps(port, client_context(ca))
        first = old.stream.extra(anyio.streams.tls.TLSAttribute.peer_certificate_binary)
        fresh = ca.issue("server2", "localhost", server=True)
        shutil.copy(fresh[0], server_cert[0])
        shutil.copy(fresh[1], server_cert[1])
        assert server.tls[0].reload()
        new = await amqps(port, client_context(ca))
        second = new.stream.extra(anyio.streams.tls.TLSAttribute.peer_certificate_binary)
        assert first != second
        await old.send(1, C.Basic.Qos(prefetch_count=1))   # the old one lives on
        await old.expect("Basic.QosOk")
        # a broken file: one line, the current certificate stays
        open(server_cert[1], "w").write("not a key")
        assert not server.tls[0].reload()
        third = await amqps(port, client_context(ca))
        assert third.stream.extra(anyio.streams.tls.TLSAttribute.peer_certificate_binary) \
            == second
        for c in (old, new, third):
            await c.aclose()
    run_tls(tmp_path, server_cert, scenario)
    assert any(r.getMessage().startswith("reloading TLS: listen.tls.certfile") or
               r.getMessage().startswith("reloading TLS: listen.tls.keyfile")
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_an_encrypted_key_with_its_password(tmp_path):
    ca = CA(tmp_path)
    cert = ca.issue("server", "localhost", server=True, password=b"s3cret")
    ctx = tls_mod.server_context(TLS(certfile=cert[0], keyfile=cert[1], password="s3cret"))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(tls_mod.StartError) as e:
        tls_mod.server_context(TLS(certfile=cert[0], keyfile=cert[1], password="wrong"))
    assert e.value.key == "listen.tls.password"
    other = ca.issue("other", "localhost", server=True)
    with pytest.raises(tls_mod.StartError) as e:
        tls_mod.server_context(TLS(certfile=cert[0], keyfile=other[1]))
    assert e.value.key == "listen.tls.keyfile"
    assert str(e.value).endswith(f"{other[1]} is not the key of {cert[0]}")
