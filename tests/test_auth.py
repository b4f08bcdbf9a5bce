"""Authentication (amqpbroker/auth.py): the mechanism registry, PLAIN and AMQPLAIN
decoding (our own table decoder, not pamqp's), the transport's loopback rule, and a
Connection offering and using what the registry holds."""
from __future__ import annotations

import dataclasses
import struct

import pytest

from amqpbroker import auth, errors
from amqpbroker.auth import AMQPlain, Plain, Transport
from amqpbroker.broker import Broker
from amqpbroker.config import Config

from .sim import Client, close_frame, names


def ls(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def entry(key: bytes, tag: bytes, value: bytes) -> bytes:
    return bytes((len(key),)) + key + tag + value


def amqplain(login: bytes, password: bytes, ltag=b"S", ptag=b"S") -> bytes:
    lv = ls(login) if ltag in (b"S", b"x") else login
    pv = ls(password) if ptag in (b"S", b"x") else password
    return entry(b"LOGIN", ltag, lv) + entry(b"PASSWORD", ptag, pv)


T = Transport()


def test_offered_mechanisms_are_the_registry_in_order():
    assert list(auth.MECHANISMS) == ["PLAIN", "AMQPLAIN", "EXTERNAL", "ANONYMOUS"]
    assert auth.offered(T) == "PLAIN AMQPLAIN"   # the default auth_mechanisms
    c = Client()
    c.conn.receive_data(b"AMQP\x00\x00\x09\x01", 0.0)
    out = c.conn.data_to_send()
    assert ls(b"PLAIN AMQPLAIN") + ls(b"en_US") in out   # the bytes RabbitMQ clients see


def test_plain():
    assert Plain().credentials(b"\x00guest\x00pw", T) == ("guest", "pw")
    assert Plain().credentials(b"authz\x00u\x00", T) == ("u", "")
    for bad in (b"guest\x00guest", b"", b"\x00a\x00b\x00c"):
        with pytest.raises(errors.AccessRefusedHard, match="mechanism PLAIN"):
            Plain().credentials(bad, T)


def test_amqplain_decoded_by_our_table_decoder():
    m = AMQPlain()
    assert m.credentials(amqplain(b"guest", b"guest"), T) == ("guest", "guest")
    assert m.credentials(amqplain("é".encode(), "ü".encode()), T) == ("é", "ü")
    extra = amqplain(b"u", b"p") + entry(b"n", b"I", struct.pack(">i", 7))
    assert m.credentials(extra, T) == ("u", "p")


@pytest.mark.parametrize("response", [
    amqplain(b"\xff\xfe", b"guest"),                 # invalid UTF-8 login
    amqplain(b"guest", b"\xc3"),                     # truncated UTF-8 password
    amqplain(b"guest", b"\xed\xa0\x80"),             # an encoded surrogate
    amqplain(b"guest", b"guest", ptag=b"x"),         # binary, not a string
    amqplain(struct.pack(">i", 5), b"guest", ltag=b"I"),  # an integer login
    amqplain(b"", b"guest", ltag=b"V"),              # void
])
def test_amqplain_credentials_that_are_not_text_are_refused(response):
    _user, password = AMQPlain().credentials(response, T)
    assert password is None


@pytest.mark.parametrize("response, text", [
    (entry(b"LOGIN", b"S", ls(b"guest")), "lacks LOGIN or PASSWORD"),
    (entry(b"LOGIN", b"S", ls(b"guest"))[:-2], "not a field table"),
    (entry(b"LOGIN", b"Z", b""), "not a field table"),
    (b"\x05LOGIN", "not a field table"),
])
def test_amqplain_unreadable_response_is_a_syntax_error(response, text):
    with pytest.raises(errors.SyntaxError_, match=text):
        AMQPlain().credentials(response, T)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.1.2.3", False), ("::ffff:10.1.2.3", False), ("192.0.2.1", False), ("?", False),
])
def test_transport_loopback(host, loopback):
    assert Transport(peer=(host, 5000)).loopback is loopback


def test_login_checks_the_user_and_loopback_rule():
    broker = Broker(Config())
    user = auth.login(broker, "PLAIN", b"\x00guest\x00guest", T, True)
    assert user.name == "guest"
    assert auth.login(broker, "PLAIN", b"\x00guest\x00nope", T, False) is None
    with pytest.raises(errors.AccessRefusedHard, match="mechanism AMQPLAIN"):
        auth.login(broker, "AMQPLAIN", amqplain(b"guest", b"\xff"), T, True)
    far = Transport(peer=("10.1.2.3", 5000), local=("10.1.2.1", 5672))
    with pytest.raises(errors.AccessRefusedHard, match="can only connect via localhost"):
        auth.login(broker, "PLAIN", b"\x00guest\x00guest", far, True)
    with pytest.raises(errors.CommandInvalid, match="invalid authentication mechanism"):
        auth.login(broker, "EXTERNAL", b"", T, True)


class Reversed:
    """A mechanism of this test's own: the response is the password, reversed, then
    NUL, then the user name."""

    name = "X-REVERSED"

    def credentials(self, response, transport):
        pw, _, user = response.partition(b"\x00")
        return user.decode(), pw[::-1].decode()


def test_a_registered_mechanism_is_offered_and_used_by_connections():
    auth.register(Reversed())
    config = dataclasses.replace(Config(), auth_mechanisms=("PLAIN", "AMQPLAIN", "X-REVERSED"))
    try:
        c = Client(config=config)
        start = c.start()
        assert start.mechanisms.split() == ["PLAIN", "AMQPLAIN", "X-REVERSED"]
        frames = c.start_ok(mechanism="X-REVERSED", response="tseug\0guest")
        assert names(frames) == ["Connection.Tune"]
        c2 = Client(config=config)
        c2.start()
        frames = c2.start_ok(mechanism="X-REVERSED", response="guest\0guest")
        assert close_frame(frames, 0).reply_code == 403
    finally:
        del auth.MECHANISMS["X-REVERSED"]
    assert auth.offered(T) == "PLAIN AMQPLAIN"


def test_connection_keeps_its_transport():
    t = Transport(peer=("127.0.0.1", 40000), local=("127.0.0.1", 5672))
    c = Client()
    from amqpbroker.connection import Connection
    conn = Connection(c.broker, t, 0.0)
    assert conn.transport is t and conn.peer == ("127.0.0.1", 40000)
    assert not conn.transport.tls and conn.transport.peer_certificate is None


# ---------------------------------------------------------------------- EXTERNAL, ANONYMOUS

ALICE = {"subject": ((("countryName", "DE"),), (("organizationName", "Acme, Inc"),),
                     (("commonName", "alice"),))}
GUEST = {"subject": ((("commonName", "guest"),),)}


def tls(cert=None, peer=("127.0.0.1", 5000)) -> Transport:
    return Transport(peer=peer, tls=True, peer_certificate=cert)


def with_mechanisms(*mechanisms, **kw) -> Config:
    return dataclasses.replace(Config(), auth_mechanisms=mechanisms, **kw)


def test_external_is_offered_on_tls_connections_only():
    enabled = ("PLAIN", "AMQPLAIN", "EXTERNAL")
    assert auth.offered(tls(), enabled) == "PLAIN AMQPLAIN EXTERNAL"   # no certificate too
    assert auth.offered(T, enabled) == "PLAIN AMQPLAIN"
    assert auth.offered(tls(GUEST)) == "PLAIN AMQPLAIN"   # not enabled: not offered
    c = Client(config=with_mechanisms(*enabled), transport=tls(GUEST))
    assert c.start().mechanisms == "PLAIN AMQPLAIN EXTERNAL"
    plain = Client(config=with_mechanisms(*enabled))
    assert plain.start().mechanisms == "PLAIN AMQPLAIN"
    frames = plain.start_ok(mechanism="EXTERNAL", response="")   # not offered: refused,
    assert names(frames) == [] and plain.conn.should_close         # silently (start state)


def test_the_subject_as_rabbitmq_names_it():
    assert auth.subject_dn(ALICE) == "CN=alice,O=Acme\\, Inc,C=DE"
    assert auth.subject_dn(GUEST) == "CN=guest"
    assert auth.common_name(ALICE) == "alice"
    multi = {"subject": ((("organizationalUnitName", "a"), ("organizationalUnitName", "b")),)}
    assert auth.subject_dn(multi) == "OU=a+OU=b"


@pytest.mark.parametrize("login_from,cert,ok", [
    ("common_name", GUEST, True),
    ("distinguished_name", GUEST, False),   # the user "CN=guest" does not exist
    ("common_name", ALICE, False),          # no user alice
    ("common_name", None, False),           # no certificate: refused
])
def test_external_login(login_from, cert, ok):
    c = Client(config=with_mechanisms("EXTERNAL", ssl_cert_login_from=login_from),
               transport=tls(cert))
    c.start()
    frames = c.start_ok(mechanism="EXTERNAL", response="")
    if ok:
        assert names(frames) == ["Connection.Tune"]
        assert c.conn.user.name == "guest"
    else:
        close = close_frame(frames, 0)
        assert (close.reply_code, close.reply_text) == (403, (
            "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. "
            "For details see the broker logfile."))


def test_external_with_a_distinguished_name_user():
    from amqpbroker.config import Permission, User
    config = dataclasses.replace(with_mechanisms("EXTERNAL"),
                                 users=(User("CN=alice,O=Acme\\, Inc,C=DE"),),
                                 permissions=(Permission("CN=alice,O=Acme\\, Inc,C=DE", "/"),))
    c = Client(config=config, transport=tls(ALICE))
    c.start()
    assert names(c.start_ok(mechanism="EXTERNAL", response="")) == ["Connection.Tune"]


def test_external_keeps_the_loopback_rule():
    c = Client(config=with_mechanisms("EXTERNAL", ssl_cert_login_from="common_name"),
               transport=tls(GUEST, peer=("10.0.0.7", 5000)))
    c.start()
    close = close_frame(c.start_ok(mechanism="EXTERNAL", response=""), 0)
    assert close.reply_code == 403 and "can only connect via localhost" in close.reply_text


def test_anonymous_logs_in_as_the_configured_user():
    c = Client(config=with_mechanisms("ANONYMOUS", "PLAIN", anonymous_login_user="guest"))
    assert c.start().mechanisms == "ANONYMOUS PLAIN"
    assert names(c.start_ok(mechanism="ANONYMOUS", response="trace")) == ["Connection.Tune"]
    assert c.conn.user.name == "guest"
