"""Configuration mistakes as a user meets them: the real ``python -m amqpbroker serve`` and
``check-config`` processes, each mistake ending in exit code 2 and exactly one line on
stderr naming the file and key (or the flag), never a traceback.  Our command line only:
no broker fixture, nothing to compare with RabbitMQ."""
from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import start_amqpbroker, stop

pytestmark = pytest.mark.amqpbroker_only("our command line and configuration file")

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "amqpbroker", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def one_line(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def serve(tmp_path, *args: str, flags: bool = True) -> str:
    """serve (which must stop by itself, at once); with ``flags``, a fresh data directory
    and a free port unless the args say otherwise."""
    more = []
    if flags:
        more += [] if "--data-dir" in args else ["--data-dir", str(tmp_path / "data")]
        more += [] if "--port" in args else ["--port", "0"]
        more += [] if "--management-port" in args else ["--management-port", "0"]
        more += [] if "--prometheus-port" in args else ["--prometheus-port", "0"]
    return one_line(run("serve", *args, *more, cwd=tmp_path, timeout=20))


# file mistakes: serve and check-config give the same line
FILE_MISTAKES = [
    (b"server:\n  product: \"caf\xe9\"\n", "invalid UTF-8 at line 2, column 16 (byte 0xe9)"),
    (b"limits:\n  heartbeat: 5\n  heartbeat: 10\n",
     "limits.heartbeat: duplicate key at line 3 (first at line 2)"),
    (b"users:\n  - {name: a, password: x}\n  - {name: a, password: y}\npermissions: []\n",
     "users[1].name: duplicate user 'a' at line 3 (first at line 2)"),
    (b"- listen\n- limits\n", "expected a mapping, got ['listen', 'limits']"),
    (b"limits:\n  frame_max: 12\n", "limits.frame_max: expected an integer >= 4096, got 12"),
    (b"listen:\n  hosts: []\n", "listen.hosts: expected at least one host"),
    (b"colour: blue\n",
     "colour: unknown key (expected one of server, listen, management, prometheus, limits, "
     "storage, "
     "vhosts, users, permissions, topic_permissions, definitions, auth_mechanisms, "
     "ssl_cert_login_from, anonymous_login_user)"),
    (b"definitions:\n  queues:\n    - {name: q, arguments: {x-max-length: -1}}\n",
     "definitions.queues[0]: PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' "
     "in vhost '/': {value_negative,-1}"),
    (b"definitions:\n  queues:\n    - {name: q, arguments: {x-a: 2020-01-01}}\n",
     "definitions.queues[0].arguments.x-a: expected a string, number, boolean, null, "
     "list or mapping, got a date (datetime.date(2020, 1, 1))"),
    (b"definitions:\n  bindings:\n    - {source: amq.direct, destination: nowhere}\n",
     "definitions.bindings[0]: NOT_FOUND - no queue 'nowhere' in vhost '/'"),
    # the plug-in exchange types are known to a fresh process's config checks too
    (b"definitions:\n  exchanges:\n    - {name: later, type: x-delayed-message,"
     b" arguments: {x-delayed-type: bogus}}\n",
     "definitions.exchanges[0]: PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' "
     "must be an existing exchange type"),
    (b"definitions:\n  exchanges:\n    - {name: once, type: x-message-deduplication}\n",
     "definitions.exchanges[0]: PRECONDITION_FAILED - Missing or invalid argument,"
     "           'x-cache-size' must be an integer greater than 0"),
    (b"definitions:\n  exchanges:\n    - {name: once, type: direct, arguments: "
     b"{x-message-deduplication: true, x-cache-persistence: tape}}\n",
     "definitions.exchanges[0]: PRECONDITION_FAILED - Invalid argument,"
     "              'x-cache-persistence' must be either 'disk' or 'memory'"),
    (b"definitions:\n  queues:\n    - {name: q, arguments: {x-message-deduplication: 1}}\n",
     "definitions.queues[0]: PRECONDITION_FAILED - invalid arg 'x-message-deduplication' "
     "for queue 'q' in vhost '/': {unacceptable_type,int}"),
    (b"definitions:\n  queues:\n    - {name: q}\n  bindings:\n    - {source: amq.topic,"
     b" destination: q, routing_key: '#', arguments: {x-filter-policy: "
     b"'{\"region\": [{\"prefix\": 5}]}'}}\n",
     "definitions.bindings[0]: PRECONDITION_FAILED - invalid x-filter-policy: key 'region': "
     "'prefix' expects a string, got 5"),
    (b"permissions:\n  - {user: nobody}\n",
     "permissions[0].user: expected one of the users, got 'nobody'"),
    (b"permissions:\n  - {user: guest, vhost: /prod}\n",
     "permissions[0].vhost: expected one of the vhosts, got '/prod'"),
    (b"topic_permissions:\n  - {user: guest, exchange: amq.topic, write: '^{username}(',"
     b" read: ''}\n",
     "topic_permissions[0].write: expected a regular expression, got '^{username}(' "
     "(missing ), unterminated subpattern at position 11)"),
    (b"topic_permissions:\n  - {user: guest, exchange: t, write: '', read: ''}\n"
     b"  - {user: guest, exchange: t, write: '.*', read: ''}\n",
     "topic_permissions[1]: duplicate topic permission for user 'guest' on vhost '/' and "
     "exchange 't' at line 3 (first at line 2)"),
]


@pytest.mark.parametrize("data, message", FILE_MISTAKES, ids=[m[1][:40] for m in FILE_MISTAKES])
def test_file_mistake_is_one_line_in_serve_and_check_config(tmp_path, data, message):
    f = tmp_path / "x.yaml"
    f.write_bytes(data)
    assert serve(tmp_path, "--config", "x.yaml") == f"amqpbroker: x.yaml: {message}"
    assert one_line(run("check-config", "x.yaml", cwd=tmp_path)) == \
        f"amqpbroker: x.yaml: {message}"


PLUGIN_DEFINITIONS = b"""definitions:
  exchanges:
    - {name: later, type: x-delayed-message, arguments: {x-delayed-type: topic}}
    - {name: later2, type: fanout, arguments: {x-delayed-exchange: true}}
    - {name: once, type: x-message-deduplication,
       arguments: {x-cache-size: 1000, x-cache-ttl: 60000, x-cache-persistence: disk}}
    - {name: once2, type: topic, arguments: {x-message-deduplication: true,
       x-deduplication-header: order-id}}
  queues:
    - {name: slow, arguments: {x-delivery-delay: 5000}}
    - {name: unique, arguments: {x-message-deduplication: true}}
  bindings:
    - {source: later, destination: slow, routing_key: "a.#",
       arguments: {x-filter-policy: '{"region": ["eu"]}'}}
"""


def test_beyond_rabbitmq_features_through_yaml_definitions(tmp_path):
    """Delayed and deduplicating exchanges (both forms each), x-delivery-delay, a
    deduplicating queue and a filter policy, declared from the YAML file by a fresh
    process."""
    (tmp_path / "p.yaml").write_bytes(PLUGIN_DEFINITIONS)
    res = run("check-config", "p.yaml", cwd=tmp_path)
    assert (res.returncode, res.stdout.strip()) == (0, "p.yaml: ok"), res.stderr


def test_missing_config_file(tmp_path):
    assert serve(tmp_path, "--config", "nope.yaml") == \
        "amqpbroker: nope.yaml: cannot read: No such file or directory"


# ---------------------------------------------------------------------- found only at start


def test_port_in_use_flag_and_file(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve(tmp_path, "--host", "127.0.0.1", "--port", str(port)) == \
            f"amqpbroker: --port: cannot listen on 127.0.0.1:{port}: Address already in use"
        (tmp_path / "p.yaml").write_text(f"listen:\n  hosts: [127.0.0.1]\n  port: {port}\n")
        assert serve(tmp_path, "--config", "p.yaml", "--data-dir", "d", flags=False) == \
            (f"amqpbroker: p.yaml: listen.port: cannot listen on 127.0.0.1:{port}: "
             f"Address already in use")
        # the machine's state: check-config does not look
        assert run("check-config", "p.yaml", cwd=tmp_path).returncode == 0


def test_host_that_cannot_be_bound_flag_and_file(tmp_path):
    line = serve(tmp_path, "--host", "192.0.2.1")
    assert line == "amqpbroker: --host: cannot listen on 192.0.2.1:0: Cannot assign requested address"
    (tmp_path / "h.yaml").write_text("listen:\n  hosts: [127.0.0.1, 192.0.2.1]\n")
    line = serve(tmp_path, "--config", "h.yaml")
    assert line.startswith("amqpbroker: h.yaml: listen.hosts[1]: cannot listen on 192.0.2.1:")
    assert line.endswith(": Cannot assign requested address")


def test_host_that_does_not_resolve(tmp_path):
    assert serve(tmp_path, "--host", "nosuchhost.invalid").startswith(
        "amqpbroker: --host: cannot resolve 'nosuchhost.invalid': ")


def test_data_directory_is_a_file_flag_and_file(tmp_path):
    (tmp_path / "afile").write_text("")
    assert serve(tmp_path, "--data-dir", "afile") == \
        "amqpbroker: --data-dir: afile is not a directory"
    (tmp_path / "s.yaml").write_text("listen:\n  port: 0\nstorage:\n  path: afile\n")
    assert serve(tmp_path, "--config", "s.yaml", flags=False) == \
        "amqpbroker: s.yaml: storage.path: afile is not a directory"


def test_data_directory_not_writable(tmp_path):
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        d = str(d)
    else:  # root ignores modes: a sysfs directory refuses even root
        d = "/sys/kernel"
        try:
            os.close(os.open(f"{d}/.probe", os.O_CREAT | os.O_WRONLY, 0o600))
            os.unlink(f"{d}/.probe")
            pytest.skip("no directory here that root cannot write")
        except OSError:
            pass
    line = serve(tmp_path, "--data-dir", d)
    assert line.startswith(f"amqpbroker: --data-dir: the data directory {d} is not writable: ")


def test_corrupt_sqlite_file(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "amqpbroker.sqlite3").write_bytes(os.urandom(8192))
    assert serve(tmp_path) == ("amqpbroker: --data-dir: "
                               f"{d / 'amqpbroker.sqlite3'} is not a usable SQLite database "
                               "(file is not a database)")


def test_sqlite_file_of_another_program(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    db = sqlite3.connect(d / "amqpbroker.sqlite3")
    db.execute("CREATE TABLE messages (id INTEGER)")
    db.commit()
    db.close()
    assert serve(tmp_path).startswith(
        f"amqpbroker: --data-dir: {d / 'amqpbroker.sqlite3'}: table messages has the columns "
        f"(id), expected (")


def test_data_directory_of_a_running_broker(tmp_path):
    d = str(tmp_path / "shared")
    proc, _ = start_amqpbroker(data_dir=d)
    try:
        assert serve(tmp_path, "--data-dir", d) == (
            f"amqpbroker: --data-dir: the data directory {d} is in use by another amqpbroker "
            f"(pid {proc.pid})")
    finally:
        stop(proc)
    proc, _ = start_amqpbroker(data_dir=d)  # stopped: the directory is free again
    stop(proc)


def test_definitions_the_store_cannot_keep(tmp_path):
    """A double beyond what the store's encoding keeps: one line from serve and check-config
    alike; once the store keeps every double, both start."""
    (tmp_path / "d.yaml").write_text(
        "definitions:\n  queues:\n    - {name: q, arguments: {x-a: 1.0e+300}}\n")
    check = run("check-config", "d.yaml", cwd=tmp_path)
    if check.returncode == 0:
        proc, _ = start_amqpbroker("--config", str(tmp_path / "d.yaml"))
        stop(proc)
        return
    line = one_line(check)
    assert line.startswith("amqpbroker: d.yaml: definitions.queues[0]: the store cannot keep it (")
    assert serve(tmp_path, "--config", "d.yaml") == line


# ---------------------------------------------------------------------- flags


@pytest.mark.parametrize("args, message", [
    (("--port", "70000"), "amqpbroker: --port: expected 0..65535, got 70000"),
    (("--port", "http"), "amqpbroker serve: argument --port: invalid int value: 'http' "
                         "(see amqpbroker serve --help)"),
    (("--data-dir", ""), "amqpbroker: --data-dir: expected a directory path, got ''"),
    (("--host", "not a host"),
     "amqpbroker: --host: expected an IP address or a host name, got 'not a host'"),
    (("--host", "127.0.0.1", "--host", "127.0.0.1"),
     "amqpbroker: --host: duplicate host '127.0.0.1'"),
    (("--log-level", "loud"), "amqpbroker serve: argument --log-level: invalid choice: "
                              "'loud' (choose from 'debug', 'info', 'warning', 'error') "
                              "(see amqpbroker serve --help)"),
])
def test_flag_mistakes(tmp_path, args, message):
    assert serve(tmp_path, *args) == message


def test_unknown_command_is_one_line(tmp_path):
    line = one_line(run("start", cwd=tmp_path))
    assert line.startswith("amqpbroker: argument command: invalid choice: 'start'")
