"""Configuration loading: every shipped file loads, the defaults are the shipped file, and
each kind of mistake gets one exact line naming the file and the key path."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amqpbroker import __main__ as cli
from amqpbroker import config

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = config.load(str(path))
    assert isinstance(cfg, config.Config)


def test_defaults_equal_broker_yaml():
    assert config.load(str(CONF / "broker.yaml")) == config.Config()


def test_empty_file_is_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("# nothing\n")
    assert config.load(str(f)) == config.Config()


def test_partial_file_keeps_other_defaults(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("limits:\n  heartbeat: 10\n")
    cfg = config.load(str(f))
    assert cfg.limits.heartbeat == 10
    assert cfg.limits.frame_max == config.Config().limits.frame_max
    assert cfg.users == config.Config().users


def test_field_lists_in_messages_are_in_declaration_order():
    assert [x.name for x in dataclasses.fields(config.Limits)][:5] == [
        "frame_max", "channel_max", "heartbeat", "max_message_size", "max_connections"]


def test_users_and_permissions(tmp_path):
    f = tmp_path / "u.yaml"
    f.write_text("vhosts: ['/', 'dev']\n"
                 "users:\n  - name: alice\n    password: pw\n    tags: [monitoring]\n"
                 "permissions:\n  - user: alice\n    vhost: dev\n    read: '^a'\n")
    cfg = config.load(str(f))
    assert cfg.vhosts == ("/", "dev")
    assert cfg.users == (config.User("alice", password="pw", tags=("monitoring",)),)
    assert cfg.permissions == (config.Permission("alice", "dev", read="^a"),)


MISTAKES = [
    # unknown key
    ("limits:\n  frame_maks: 4096\n",
     "limits.frame_maks: unknown key (expected one of {Limits})"),
    ("colour: blue\n",
     "colour: unknown key (expected one of {Config})"),
    ("users:\n  - name: a\n    password: b\n    admin: true\n",
     "users[0].admin: unknown key (expected one of {User})"),
    # wrong type
    ("limits:\n  frame_max: big\n", "limits.frame_max: expected an integer, got 'big'"),
    ("limits:\n  heartbeat: true\n", "limits.heartbeat: expected an integer, got True"),
    ("listen:\n  hosts: localhost\n", "listen.hosts: expected a list, got 'localhost'"),
    ("listen:\n  hosts: [1]\n", "listen.hosts[0]: expected a string, got 1"),
    ("users:\n  - name: a\n    password: b\n    loopback_only: 'no'\n",
     "users[0].loopback_only: expected a boolean, got 'no'"),
    ("limits: 5\n", "limits: expected a mapping, got 5"),
    ("- a\n- b\n", "expected a mapping, got ['a', 'b']"),
    # bad value
    ("limits:\n  frame_max: 12\n", "limits.frame_max: expected an integer >= 4096, got 12"),
    ("listen:\n  port: 70000\n", "listen.port: expected an integer 0..65535, got 70000"),
    ("storage:\n  backend: sqlte\n",
     "storage.backend: expected one of memory, sqlite, got 'sqlte'"),
    ("server:\n  log_level: loud\n",
     "server.log_level: expected one of debug, info, warning, error, got 'loud'"),
    ("limits:\n  channel_max: 0\n", "limits.channel_max: expected an integer 1..65535, got 0"),
    # missing required
    ("users:\n  - password: x\n", "users[0].name: required key is missing"),
    ("users:\n  - name: x\n", "users[0]: expected password or password_hash"),
    # cross references
    ("users:\n  - name: alice\n    password: pw\npermissions:\n  - user: bob\n",
     "permissions[0].user: expected one of the users, got 'bob'"),
    ("permissions:\n  - user: guest\n    vhost: /nope\n",
     "permissions[0].vhost: expected one of the vhosts, got '/nope'"),
    ("permissions:\n  - user: guest\n    write: '(a'\n",
     "permissions[0].write: expected a regular expression, got '(a' "
     "(missing ), unterminated subpattern at position 0)"),
    ("users:\n  - name: a\n    password_hash: 'not base64!'\n",
     "users[0].password_hash: expected base64 of a 4-byte salt and a SHA-256 digest, "
     "got 'not base64!'"),
    ("users:\n  - name: a\n    password_hash: 'c2hvcnQ='\n",
     "users[0].password_hash: expected base64 of a 4-byte salt and a SHA-256 digest, "
     "got 'c2hvcnQ='"),
    ("storage:\n  path: 5\n", "storage.path: expected a string, got 5"),
    ("storage:\n  engine: sqlite\n", "storage.engine: unknown key (expected one of backend, path)"),
    # definitions
    ("definitions:\n  queues:\n    - durable: true\n",
     "definitions.queues[0].name: required key is missing"),
    ("definitions:\n  queues:\n    - name: q\n      durable: maybe\n",
     "definitions.queues[0].durable: expected a boolean, got 'maybe'"),
    ("definitions:\n  queues:\n    - name: q\n      arguments: [1]\n",
     "definitions.queues[0].arguments: expected a mapping with string keys, got [1]"),
    ("definitions:\n  exchanges:\n    - name: x\n      type: fan\n",
     "definitions.exchanges[0].type: expected one of direct, fanout, topic, headers, "
     "x-delayed-message, x-message-deduplication, got 'fan'"),
    ("definitions:\n  exchanges:\n    - name: x\n      vhost: dev\n",
     "definitions.exchanges[0].vhost: expected one of the vhosts, got 'dev'"),
    ("definitions:\n  bindings:\n    - source: x\n      destination: q\n"
     "      destination_type: topic\n",
     "definitions.bindings[0].destination_type: expected one of queue, exchange, got 'topic'"),
    ("definitions:\n  bindings:\n    - destination: q\n",
     "definitions.bindings[0].source: required key is missing"),
    ("definitions:\n  parameters: []\n",
     "definitions.parameters: unknown key (expected one of exchanges, queues, bindings, "
     "policies, operator_policies)"),
    ("definitions:\n  policies:\n    - {name: p, pattern: q, definition: {message-ttl: -1}}\n",
     "definitions.policies[0]: -1 is not a valid message TTL"),
    ("definitions:\n  policies:\n    - {name: p, pattern: '(', definition: {expires: 5}}\n",
     'definitions.policies[0]: <<"(">> is not a valid regular expression (missing ), '
     "unterminated subpattern at position 0)"),
    ("definitions:\n  operator_policies:\n"
     "    - {name: p, pattern: q, definition: {dead-letter-exchange: x}}\n",
     'definitions.operator_policies[0]: [{{<<"dead-letter-exchange">>,<<"x">>}}] are not '
     "recognised policy settings"),
    ("definitions:\n  policies:\n    - {name: p, pattern: q, definition: {max-length: 1}}\n"
     "    - {name: p, pattern: r, definition: {max-length: 2}}\n",
     "definitions.policies[1].name: duplicate policy 'p' in vhost '/' (first "
     "definitions.policies[0])"),
    ("definitions:\n  policies:\n    - {name: p, pattern: q, definition: {max-priority: 5}}\n",
     'definitions.policies[0]: [{{<<"max-priority">>,5}}] are not recognised policy '
     "settings"),
    # duplicate keys (the YAML itself): the later line and the first
    ("limits:\n  heartbeat: 1\n  frame_max: 4096\n  heartbeat: 2\n",
     "limits.heartbeat: duplicate key at line 4 (first at line 2)"),
    ("listen: {port: 1}\nvhosts: [/]\nlisten: {port: 2}\n",
     "listen: duplicate key at line 3 (first at line 1)"),
    ("users:\n  - name: a\n    password: b\n    password: c\n",
     "users[0].password: duplicate key at line 4 (first at line 3)"),
    ("definitions:\n  queues:\n    - {name: q, arguments: {x-a: 1, x-a: 2}}\n",
     "definitions.queues[0].arguments.x-a: duplicate key at line 3 (first at line 3)"),
    # duplicate items
    ("users:\n  - name: a\n    password: b\n  - name: guest\n    password: g\n"
     "  - name: a\n    password: c\n",
     "users[2].name: duplicate user 'a' at line 6 (first at line 2)"),
    ("vhosts:\n  - /\n  - dev\n  - dev\n",
     "vhosts[2]: duplicate vhost 'dev' at line 4 (first at line 3)"),
    ("permissions:\n  - {user: guest, read: a}\n  - {user: guest, vhost: /}\n",
     "permissions[1]: duplicate permission for user 'guest' on vhost '/' at line 3 "
     "(first at line 2)"),
    ("listen:\n  hosts:\n    - 127.0.0.1\n    - ::1\n    - 127.0.0.1\n",
     "listen.hosts[2]: duplicate host '127.0.0.1' at line 5 (first at line 3)"),
    # hosts, paths, names
    ("listen:\n  hosts: []\n", "listen.hosts: expected at least one host"),
    ("listen:\n  hosts: ['999.1.1.1']\n",
     "listen.hosts[0]: expected an IP address or a host name, got '999.1.1.1'"),
    ("listen:\n  hosts: ['local host']\n",
     "listen.hosts[0]: expected an IP address or a host name, got 'local host'"),
    ("listen:\n  port: '5672'\n", "listen.port: expected an integer, got '5672'"),
    ("storage:\n  path: ''\n", "storage.path: expected a directory path, got ''"),
    ("vhosts: ['']\n", "vhosts[0]: expected a vhost name of 1..255 bytes, got ''"),
    ("users:\n  - {name: '', password: x}\npermissions: []\n",
     "users[0].name: expected a user name of 1..255 bytes, got ''"),
    ("definitions:\n  queues:\n    - name: ''\n",
     "definitions.queues[0].name: expected a queue name of 1..255 bytes, got ''"),
    ("definitions:\n  exchanges:\n    - name: " + "x" * 256 + "\n",
     "definitions.exchanges[0].name: expected an exchange name of 1..255 bytes, got '"
     + "x" * 56 + "..."),
    ("definitions:\n  bindings:\n    - {source: amq.direct, destination: q, routing_key: "
     + "é" * 128 + "}\n",
     "definitions.bindings[0].routing_key: expected a routing key of 0..255 bytes, got '"
     + "é" * 56 + "..."),
    # text that UTF-8 cannot encode (a YAML escape makes a lone surrogate)
    ('server:\n  product: "a\\ud800"\n',
     "server.product: expected text that UTF-8 can encode, got 'a\\ud800' "
     "(character 2 is '\\ud800')"),
    # numbers
    ("limits:\n  memory_high_watermark: .nan\n",
     "limits.memory_high_watermark: expected a finite number, got nan"),
    # argument values: what a field table (and so the store) can carry
    ("definitions:\n  queues:\n    - {name: q, arguments: {x-a: 2020-01-01}}\n",
     "definitions.queues[0].arguments.x-a: expected a string, number, boolean, null, "
     "list or mapping, got a date (datetime.date(2020, 1, 1))"),
    ("definitions:\n  queues:\n    - {name: q, arguments: {x-a: [2030-01-01 10:00:00]}}\n",
     "definitions.queues[0].arguments.x-a[0]: expected a string, number, boolean, null, "
     "list or mapping, got a timestamp (datetime.datetime(2030, 1, 1, 10, 0))"),
    ("definitions:\n  queues:\n    - {name: q, arguments: {x-a: !!binary aGk=}}\n",
     "definitions.queues[0].arguments.x-a: expected a string, number, boolean, null, "
     "list or mapping, got binary data (b'hi')"),
    ("definitions:\n  queues:\n    - {name: q, arguments: {x-a: [1, {2: b}]}}\n",
     "definitions.queues[0].arguments.x-a[1]: expected a mapping with string keys, got the "
     "key 2"),
    ("definitions:\n  queues:\n    - {name: q, arguments: {x-a: 9223372036854775808}}\n",
     "definitions.queues[0].arguments.x-a: expected a 64-bit signed integer, got "
     "9223372036854775808"),
    ("definitions:\n  queues:\n    - {name: q, arguments: {x-a: [.inf]}}\n",
     "definitions.queues[0].arguments.x-a[0]: expected a finite number, got inf"),
    ("definitions:\n  exchanges:\n    - {name: x, arguments: {" + "k" * 256 + ": 1}}\n",
     "definitions.exchanges[0].arguments." + "k" * 256 + ": expected a key of 1..255 bytes, "
     "got 256 bytes"),
    ('definitions:\n  queues:\n    - {name: q, arguments: {x-a: "\\udcff"}}\n',
     "definitions.queues[0].arguments.x-a: expected text that UTF-8 can encode, got "
     "'\\udcff' (character 1 is '\\udcff')"),
    # null where a list is needed; the default permissions without guest or '/'
    ("users:\n", "users: expected a list, got None ([] for none)"),
    ("users:\n  -\n", "users[0]: expected a mapping, got None"),
    ("vhosts: [dev]\n",
     "permissions: not set, and the default (user 'guest' on vhost '/') names a user or "
     "vhost this file does not have; set permissions ([] for none)"),
    ("users:\n  - {name: alice, password: x}\n",
     "permissions: not set, and the default (user 'guest' on vhost '/') names a user or "
     "vhost this file does not have; set permissions ([] for none)"),
    # SASL mechanisms (issue 11)
    ("auth_mechanisms: [PLAIN, CRAM-MD5]\n",
     "auth_mechanisms[1]: expected one of PLAIN, AMQPLAIN, EXTERNAL, ANONYMOUS, got 'CRAM-MD5'"),
    ("auth_mechanisms: []\n", "auth_mechanisms: expected at least one mechanism, got []"),
    ("auth_mechanisms:\n  - PLAIN\n  - PLAIN\n",
     "auth_mechanisms[1]: duplicate mechanism 'PLAIN' at line 3 (first at line 2)"),
    ("auth_mechanisms: [ANONYMOUS]\n", "anonymous_login_user: expected one of the users "
     "(ANONYMOUS is in auth_mechanisms), got None"),
    ("ssl_cert_login_from: cn\n",
     "ssl_cert_login_from: expected one of distinguished_name, common_name, got 'cn'"),
    # YAML that is not one plain document
    ("a: 1\n---\nb: 2\n",
     "invalid YAML at line 2, column 1: expected a single document in the stream, but found "
     "another document"),
    ("x: !!python/object:os.system ls\n",
     "invalid YAML at line 1, column 4: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object:os.system'"),
    ("x: *nowhere\n", "invalid YAML at line 1, column 4: found undefined alias 'nowhere'"),
    ("server:\n  product: \"a\x07\"\n",
     "invalid YAML at line 2, column 14: character #x0007 is not allowed"),
    ("storage:\n  path: \"a\\0b\"\n",
     "storage.path: expected a directory path, got 'a\\x00b'"),
    # aliases: nesting past 16, a value containing itself, a "billion laughs" table
    ("a:\n" + "- " * 3000 + "1\n", "invalid YAML: nested too deeply"),
    ("definitions:\n  queues:\n    - {name: q, arguments: {x-a: &a [*a]}}\n",
     "definitions.queues[0].arguments.x-a" + "[0]" * 17 + ": expected at most 16 levels of "
     "nesting"),
    ("definitions:\n  queues:\n    - name: q\n      arguments:\n        x-0: &a0 [1, 2]\n"
     + "".join(f"        x-{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n"
               for i in range(1, 12)),
     "definitions.queues[0].arguments.x-4[2][1][0][2][0]: expected at most 10000 values in one "
     "table"),
]

# definitions that parse but cannot be applied: serve stops, check-config says the same
UNAPPLICABLE = [
    ("definitions:\n  queues:\n    - name: q\n      arguments: {x-max-priority: 1000}\n",
     "definitions.queues[0]: PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue "
     "'q' in vhost '/': {max_value_exceeded,1000}"),
    ("definitions:\n  bindings:\n    - source: amq.direct\n      destination: missing\n",
     "definitions.bindings[0]: NOT_FOUND - no queue 'missing' in vhost '/'"),
    ("definitions:\n  bindings:\n    - source: nope\n      destination: amq.topic\n"
     "      destination_type: exchange\n",
     "definitions.bindings[0]: NOT_FOUND - no exchange 'nope' in vhost '/'"),
    ("definitions:\n  exchanges:\n    - name: amq.mine\n",
     "definitions.exchanges[0]: ACCESS_REFUSED - exchange name 'amq.mine' contains reserved "
     "prefix 'amq.*'"),
    ("definitions:\n  exchanges:\n    - name: x\n    - name: x\n      type: topic\n",
     "definitions.exchanges[1]: PRECONDITION_FAILED - inequivalent arg 'type' for exchange "
     "'x' in vhost '/': received 'topic' but current is 'direct'"),
]


@pytest.mark.parametrize("text, message", UNAPPLICABLE, ids=[m[1][:50] for m in UNAPPLICABLE])
def test_unapplicable_definitions_check_config(tmp_path, capsys, text, message):
    f = tmp_path / "defs.yaml"
    f.write_text(text)
    assert cli.main(["check-config", str(f)]) == 2
    assert capsys.readouterr().err.strip() == f"amqpbroker: {f}: {message}"


def test_unapplicable_definitions_stop_serve(tmp_path):
    text, message = UNAPPLICABLE[0]
    f = tmp_path / "defs.yaml"
    f.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "amqpbroker", "serve", "--port", "0",
                          "--management-port", "off", "--prometheus-port", "off",
                          "--config", str(f), "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == f"amqpbroker: {f}: {message}"
    assert "Traceback" not in res.stderr


def test_definitions_load(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("vhosts: ['/', dev]\n"
                 "definitions:\n"
                 "  exchanges:\n    - {name: orders, type: topic, vhost: dev, "
                 "arguments: {alternate-exchange: ae}}\n"
                 "  queues:\n    - {name: q, durable: false, arguments: {x-message-ttl: 5}}\n"
                 "  bindings:\n    - {source: orders, destination: q, routing_key: 'a.#', "
                 "vhost: dev}\n")
    d = config.load(str(f)).definitions
    assert d.exchanges == (config.ExchangeDefinition("orders", "topic", "dev",
                                                     arguments={"alternate-exchange": "ae"}),)
    assert d.queues == (config.QueueDefinition("q", durable=False,
                                               arguments={"x-message-ttl": 5}),)
    assert d.bindings == (config.BindingDefinition("orders", "q", routing_key="a.#",
                                                   vhost="dev"),)


def test_password_hash_from_rabbitmq_accepted(tmp_path):
    """A hash as RabbitMQ 3.10's `rabbitmqctl export_definitions` wrote it for guest."""
    from amqpbroker.broker import check_password
    h = "B+Ufr9e4XXV6/U3Dd6RHogPzeTiDwc0o+TJm/euCC3pfJ4cR"
    f = tmp_path / "h.yaml"
    f.write_text(f"users:\n  - name: guest\n    password_hash: '{h}'\n")
    user = config.load(str(f)).users[0]
    assert check_password(user, "guest") and not check_password(user, "Guest")


@pytest.mark.parametrize("text, message", MISTAKES, ids=[m[1][:40] for m in MISTAKES])
def test_mistakes_have_exact_messages(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f))
    fields = {cls.__name__: ", ".join(x.name for x in dataclasses.fields(cls))
              for cls in (config.Config, config.Limits, config.User)}
    assert str(e.value) == f"{f}: {message.format(**fields)}"
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("data, message", [
    (b"server:\n  product: \"\xff\"\n", "invalid UTF-8 at line 2, column 13 (byte 0xff)"),
    (b"# caf\xe9\nlimits: {}\n", "invalid UTF-8 at line 1, column 6 (byte 0xe9)"),
    (b"\xfe\xff\x00l\x00i", "invalid UTF-8 at line 1, column 1 (byte 0xfe)"),  # UTF-16
])
def test_invalid_utf8(tmp_path, data, message):
    f = tmp_path / "latin1.yaml"
    f.write_bytes(data)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f))
    assert str(e.value) == f"{f}: {message}"


def test_utf8_bom_and_merge_keys_are_not_mistakes(tmp_path):
    """A BOM is fine, and a key overriding one merged in with ``<<`` is no duplicate."""
    f = tmp_path / "merge.yaml"
    f.write_bytes("\ufeffdefinitions:\n  queues:\n"
                  "    - &base {name: a, durable: false}\n"
                  "    - <<: *base\n      name: b\n".encode())
    queues = config.load(str(f)).definitions.queues
    assert [(q.name, q.durable) for q in queues] == [("a", False), ("b", False)]


def test_empty_sections_are_defaults(tmp_path):
    f = tmp_path / "sections.yaml"
    f.write_text("listen:\nlimits:\n  # heartbeat: 5\nstorage:\n")
    assert config.load(str(f)) == config.Config()


def test_a_completely_empty_file_is_defaults(tmp_path):
    f = tmp_path / "zero.yaml"
    f.write_bytes(b"")
    assert config.load(str(f)) == config.Config()


def test_directory_as_config(tmp_path):
    with pytest.raises(config.ConfigError) as e:
        config.load(str(tmp_path))
    assert str(e.value) == f"{tmp_path}: cannot read: Is a directory"


def test_invalid_yaml_message(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("limits:\n  frame_max: [1, 2\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f))
    msg = str(e.value)
    assert msg.startswith(f"{f}: invalid YAML at line ")
    assert ", column " in msg and "\n" not in msg


def test_invalid_yaml_tab_indent(tmp_path):
    f = tmp_path / "tabs.yaml"
    f.write_text("limits:\n\tframe_max: 4096\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f))
    assert str(e.value).startswith(f"{f}: invalid YAML at line 2, column 1: ")


def test_missing_file(tmp_path):
    f = tmp_path / "absent.yaml"
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f))
    assert str(e.value) == f"{f}: cannot read: No such file or directory"


def test_config_is_frozen():
    cfg = config.Config()
    with pytest.raises(Exception):
        cfg.limits.frame_max = 1  # type: ignore[misc]


# ---------------------------------------------------------------------- check-config


def test_check_config_ok(capsys):
    path = str(CONF / "broker.yaml")
    assert cli.main(["check-config", path]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: ok"


def test_check_config_bad(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("storage:\n  backend: sqlte\n")
    assert cli.main(["check-config", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"amqpbroker: {f}: storage.backend: expected one of memory, sqlite, got 'sqlte'"


def test_check_config_subprocess_exit_codes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ok = subprocess.run([sys.executable, "-m", "amqpbroker", "check-config",
                         str(CONF / "broker.yaml")], capture_output=True, text=True, env=env,
                        cwd=tmp_path, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits:\n  frame_max: 12\n")
    res = subprocess.run([sys.executable, "-m", "amqpbroker", "check-config", str(bad)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"amqpbroker: {bad}: limits.frame_max: expected an integer >= 4096, got 12"]
