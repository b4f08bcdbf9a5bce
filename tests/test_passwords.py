"""RabbitMQ's password hash formats (passwords.py) and logins with them through real
frames: SHA-256 (hashes made by RabbitMQ 3.10.8 itself), SHA-512 and MD5 (made as
rabbit_password_hashing_sha512/_md5 do; interop/test_limits.py checks that RabbitMQ
accepts the same SHA-512 hash); ``hashing_algorithm`` in YAML and in definitions."""
from __future__ import annotations

import base64
import hashlib

import pytest

from amqpbroker import definitions, passwords
from amqpbroker.auth import Transport
from amqpbroker.broker import Broker
from amqpbroker.config import Config, ConfigError, User, from_dict

from .sim import Client, close_frame, names

# exported by `rabbitmqctl export_definitions` (RabbitMQ 3.10.8): guest/guest, and a user
# added with `rabbitmqctl add_user limu pw`
RABBITMQ_SHA256 = {"guest": "vThRp7E11kFmjZQeSOq8Kn6Da2HzO44RKFnY1UglS9SxkuCn",
                   "pw": "3yBUcfYt+Wbs+5e8bs7woRGqZMyEkjjqfWS9S6KDmxHhejrk"}
SALT = b"\x9a\x01\xfe\x42"


def made(password: str, h) -> str:
    """base64(salt + H(salt + password)), written out here, not by passwords.py."""
    return base64.b64encode(SALT + h(SALT + password.encode()).digest()).decode()


SHA512 = made("s3cret-512", hashlib.sha512)
MD5 = made("s3cret-md5", hashlib.md5)


def login(b: Broker, user: str, password: str, peer=("127.0.0.1", 5000), tls=False):
    """Start-Ok over real frames: the names of what came back."""
    c = Client(broker=b, transport=Transport(peer=peer, tls=tls))
    c.start()
    return c.start_ok(user, password)


def test_rabbitmq_sha256_hashes():
    for password, h in RABBITMQ_SHA256.items():
        assert passwords.check(User("u", password_hash=h), password)
        assert not passwords.check(User("u", password_hash=h), password + "x")
    assert passwords.hash_password("guest", base64.b64decode(RABBITMQ_SHA256["guest"])[:4]) \
        == RABBITMQ_SHA256["guest"]


@pytest.mark.parametrize("algorithm, h, password", [
    (passwords.SHA512, SHA512, "s3cret-512"), (passwords.MD5, MD5, "s3cret-md5"),
    (passwords.SHA256, RABBITMQ_SHA256["pw"], "pw")])
def test_login_with_each_format_over_frames(algorithm, h, password):
    cfg = from_dict({"users": [{"name": "guest", "password": "guest"},
                               {"name": "u", "password_hash": h,
                                "hashing_algorithm": algorithm}],
                     "permissions": [{"user": "u"}]})
    b = Broker(cfg)
    assert names(login(b, "u", password)) == ["Connection.Tune"]
    close = close_frame(login(b, "u", password[:-1]))
    assert (close.reply_code, close.reply_text) == (
        403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For "
             "details see the broker logfile.")
    assert passwords.hash_password(password, SALT, algorithm) == h or algorithm == \
        passwords.SHA256


def test_a_hash_under_the_wrong_algorithm_never_matches():
    assert not passwords.check(User("u", password_hash=SHA512), "s3cret-512")  # as SHA-256
    assert not passwords.check(User("u", password_hash=SHA512, hashing_algorithm="nope"),
                               "s3cret-512")


@pytest.mark.parametrize("user, message", [
    ({"password_hash": SHA512}, "users[1].password_hash: expected base64 of a 4-byte salt "
                                "and a SHA-256 digest"),
    ({"password_hash": RABBITMQ_SHA256["pw"], "hashing_algorithm": passwords.SHA512},
     "users[1].password_hash: expected base64 of a 4-byte salt and a SHA-512 digest"),
    ({"password_hash": SHA512, "hashing_algorithm": passwords.MD5},
     "users[1].password_hash: expected base64 of a 4-byte salt and a MD5 digest"),
    ({"password": "x", "hashing_algorithm": "sha512"},
     "users[1].hashing_algorithm: expected one of rabbit_password_hashing_sha256, "
     "rabbit_password_hashing_sha512, rabbit_password_hashing_md5, got 'sha512'"),
])
def test_yaml_hash_mistakes(user, message):
    with pytest.raises(ConfigError) as e:
        from_dict({"users": [{"name": "guest", "password": "guest"}, {"name": "u", **user}]})
    assert str(e.value).startswith(message), str(e.value)


def test_definitions_hashing_algorithms():
    b = Broker(Config())
    definitions.apply(b, {"rabbit_version": "3.10.8", "users": [
        {"name": "a", "password_hash": SHA512, "hashing_algorithm": passwords.SHA512,
         "tags": []},
        {"name": "b", "password_hash": MD5, "hashing_algorithm": passwords.MD5, "tags": []},
        {"name": "c", "password_hash": RABBITMQ_SHA256["pw"], "tags": []}]})
    assert passwords.check(b.users["a"], "s3cret-512")
    assert passwords.check(b.users["b"], "s3cret-md5")
    assert passwords.check(b.users["c"], "pw")  # no algorithm: RabbitMQ's default, SHA-256
    exported = {u["name"]: u for u in definitions.export(b)["users"]}
    assert (exported["a"]["password_hash"], exported["a"]["hashing_algorithm"]) == (
        SHA512, passwords.SHA512)
    assert exported["b"]["hashing_algorithm"] == passwords.MD5
    assert exported["guest"]["hashing_algorithm"] == passwords.SHA256  # plain, hashed


def test_definitions_from_before_3_6_are_md5():
    """A file without hashing_algorithm from RabbitMQ 3.0-3.5 holds MD5 hashes."""
    b = Broker(Config())
    definitions.apply(b, {"rabbit_version": "3.5.7", "users": [
        {"name": "old", "password_hash": MD5, "tags": ""}]})
    assert b.users["old"].hashing_algorithm == passwords.MD5
    assert passwords.check(b.users["old"], "s3cret-md5")
