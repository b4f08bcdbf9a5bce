"""The edge's listeners from ``listen`` (amqpbroker/listeners.py, config.py): the shape
``listen: {hosts, port, tls: {...}}``, ``port: null`` turning the plain listener off, and
a configured ``tls`` refused at start in one line (amqps is issue 11)."""
from __future__ import annotations

import anyio
import anyio.abc
import pytest

from amqpbroker import __main__ as cli
from amqpbroker import config, listeners
from amqpbroker.config import TLS, Config, Listen, Storage, Management, Prometheus
from amqpbroker.server import Server

OFF = Management(port=None)  # the reference RabbitMQ here holds 15672 and 15692
POFF = Prometheus(port=None)

TLS_OK = "  tls:\n    certfile: /etc/amqp/server.pem\n    keyfile: /etc/amqp/server.key\n"


def load(tmp_path, text: str) -> Config:
    f = tmp_path / "b.yaml"
    f.write_text(text)
    return config.load(str(f))


def error(tmp_path, text: str) -> str:
    with pytest.raises(config.ConfigError) as e:
        load(tmp_path, text)
    return str(e.value).split(": ", 1)[1]


def test_tls_shape_parsed_with_defaults(tmp_path):
    cfg = load(tmp_path, "listen:\n" + TLS_OK + "    cafile: /etc/amqp/ca.pem\n"
                         "    verify: require\n    password: secret\n")
    t = cfg.listen.tls
    assert t == TLS(certfile="/etc/amqp/server.pem", keyfile="/etc/amqp/server.key",
                    port=5671, password="secret", cafile="/etc/amqp/ca.pem",
                    verify="require", min_version="tlsv1.2", ciphers=None)
    assert cfg.listen.port == 5672          # both listeners by default
    assert load(tmp_path, "listen:\n  tls:\n").listen.tls is None   # empty: off
    assert Config().listen.tls is None


@pytest.mark.parametrize("text, message", [
    ("listen:\n" + TLS_OK + "    colour: blue\n",
     "listen.tls.colour: unknown key (expected one of certfile, keyfile, port, password, "
     "cafile, verify, min_version, ciphers)"),
    ("listen:\n  tls:\n    certfile: a.pem\n", "listen.tls.keyfile: required key is missing"),
    ("listen:\n" + TLS_OK + "    verify: always\n",
     "listen.tls.verify: expected one of none, peer, require, got 'always'"),
    ("listen:\n" + TLS_OK + "    verify: true\n", "listen.tls.verify: expected a string, got True"),
    ("listen:\n" + TLS_OK + "    port: 70000\n",
     "listen.tls.port: expected an integer 0..65535, got 70000"),
    ("listen:\n" + TLS_OK + "    port: 5672\n",
     "listen.tls.port: expected a port other than listen.port, got 5672"),
    ("listen:\n" + TLS_OK + "    min_version: tlsv1.1\n",
     "listen.tls.min_version: expected one of tlsv1.2, tlsv1.3, got 'tlsv1.1'"),
    ("listen:\n  tls:\n    certfile: ''\n    keyfile: k\n",
     "listen.tls.certfile: expected a file path, got ''"),
    ("listen:\n  tls: 5671\n", "listen.tls: expected a mapping, got 5671"),
    ("listen:\n  port: null\n", "listen.port: expected an integer, got None (null turns the "
                                "plain listener off only when listen.tls listens)"),
    ("listen:\n  port: null\n" + TLS_OK + "    port: null\n",
     "listen.port: expected an integer, got None (null turns the plain listener off only "
     "when listen.tls listens)"),
])
def test_listen_mistakes(tmp_path, text, message):
    assert error(tmp_path, text) == message


def test_plain_listener_off_when_tls_listens(tmp_path):
    cfg = load(tmp_path, "listen:\n  port: null\n" + TLS_OK)
    assert cfg.listen.port is None and cfg.listen.tls.port == 5671


def test_endpoints_of_the_plain_listener():
    (e,) = listeners.endpoints(Listen(hosts=("127.0.0.1",), port=5999))
    assert (e.key, e.hosts_key, e.hosts, e.port, e.tls) == \
        ("listen.port", "listen.hosts", ("127.0.0.1",), 5999, None)


def test_a_missing_certificate_is_refused_at_start_in_one_line(tmp_path):
    conf = Config(management=OFF, prometheus=POFF, listen=Listen(hosts=("127.0.0.1",), port=0,
                                tls=TLS(certfile=str(tmp_path / "c.pem"),
                                        keyfile=str(tmp_path / "k.pem"))),
                  storage=Storage(backend="memory"))
    server = Server(conf)

    async def main():
        await server.listen()
    with pytest.raises(config.StartError) as e:
        anyio.run(main)
    assert e.value.key == "listen.tls.certfile"
    assert str(e.value) == (f"listen.tls.certfile: cannot read {tmp_path / 'c.pem'}: "
                            f"No such file or directory")
    assert server.ports == [] and server._listener is None


def test_serve_with_an_unreadable_certificate_exits_2_with_that_line(tmp_path, capsys):
    f = tmp_path / "tls.yaml"
    f.write_text("listen:\n  hosts: [127.0.0.1]\n  port: 0\n" + TLS_OK +
                 f"storage:\n  path: {tmp_path / 'data'}\n")
    assert cli.main(["serve", "--config", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"amqpbroker: {f}: listen.tls.certfile: cannot read /etc/amqp/server.pem: "
                   f"No such file or directory"]


def test_verify_without_a_ca_file_is_a_config_mistake(tmp_path):
    assert error(tmp_path, "listen:\n" + TLS_OK + "    verify: peer\n") == (
        "listen.tls.cafile: expected a CA file to check client certificates against "
        "(verify is peer)")


def test_a_connection_gets_its_sockets_transport(tmp_path):
    """Over a real socket: the Connection's Transport names both ends, no TLS."""
    from .test_server_tasks import RawClient, run_server

    async def scenario(server, port):
        known = set(server.connections.live)
        c = await RawClient.open(port)
        (conn,) = set(server.connections.live) - known
        t = conn.transport
        assert t.local[:2] == ("127.0.0.1", port) and t.peer[0] == "127.0.0.1"
        assert t.peer[1] == c.stream.extra(anyio.abc.SocketAttribute.local_address)[1]
        assert t.loopback and not t.tls and t.peer_certificate is None
        assert conn.peer == t.peer and conn.user.name == "guest"
        await c.aclose()
    run_server(tmp_path, scenario)
