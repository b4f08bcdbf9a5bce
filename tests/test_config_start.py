"""Mistakes found only at start (a data directory or store that cannot be used, a host that
cannot be bound, a port in use, definitions the store cannot keep): each is a StartError or
ConfigError of one exact line naming the key, raised by a real Server, with the store
closed again; and check-config, which must not depend on the machine, passes them."""
from __future__ import annotations

import os
import socket
import sqlite3

import anyio
import pytest

from amqpbroker import __main__ as cli
from amqpbroker import config
from amqpbroker.config import Config, Listen, Storage, Management, Prometheus
from amqpbroker.message import Message
from amqpbroker.server import Server
from amqpbroker.store.sqlite import SQLiteStore

OFF = Management(port=None)  # the reference RabbitMQ here holds 15672 and 15692
POFF = Prometheus(port=None)

PERSISTENT = bytes([0x10, 0x00, 2])


def cfg(path, hosts=("127.0.0.1",), port=0, **more) -> Config:
    return Config(management=OFF, prometheus=POFF, listen=Listen(hosts=tuple(hosts), port=port),
                  storage=Storage(backend="sqlite", path=str(path)), **more)


def start_error(conf: Config) -> config.StartError:
    with pytest.raises(config.StartError) as e:
        Server(conf)
    return e.value


def unwritable_dir(tmp_path) -> str:
    """A directory we cannot create files in: mode 0555 for a user, a sysfs directory for
    root (which ignores modes)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return str(d)
    for d in ("/sys/kernel", "/proc/self"):
        try:
            os.close(os.open(os.path.join(d, ".probe"), os.O_CREAT | os.O_WRONLY, 0o600))
            os.unlink(os.path.join(d, ".probe"))
        except OSError:
            return d
    pytest.skip("no directory here that root cannot write")


# ---------------------------------------------------------------------- the data directory


def test_data_directory_is_a_file(tmp_path):
    f = tmp_path / "data"
    f.write_text("")
    e = start_error(cfg(f))
    assert (e.key, e.message) == ("storage.path", f"{f} is not a directory")
    assert str(e) == f"storage.path: {f} is not a directory"


def test_data_directory_cannot_be_created(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    e = start_error(cfg(f / "data"))
    assert str(e) == f"storage.path: cannot create the data directory {f / 'data'}: Not a directory"


def test_data_directory_not_writable(tmp_path):
    d = unwritable_dir(tmp_path)
    e = start_error(cfg(d))
    assert str(e).startswith(f"storage.path: the data directory {d} is not writable: ")
    assert "\n" not in str(e)


def test_sqlite_file_is_a_directory(tmp_path):
    (tmp_path / "amqpbroker.sqlite3").mkdir()
    e = start_error(cfg(tmp_path))
    assert str(e) == (f"storage.path: {tmp_path / 'amqpbroker.sqlite3'} is a directory, "
                      f"expected the SQLite file")


def test_not_a_database(tmp_path):
    (tmp_path / "amqpbroker.sqlite3").write_bytes(b"this is not SQLite\n" * 300)
    e = start_error(cfg(tmp_path))
    assert str(e) == (f"storage.path: {tmp_path / 'amqpbroker.sqlite3'} is not a usable "
                      f"SQLite database (file is not a database)")


def test_corrupt_page_found_by_quick_check(tmp_path):
    s = SQLiteStore(str(tmp_path))
    for i in range(2000):
        s.append("/", "q", i, Message("", "q", PERSISTENT, b"x" * 100), None)
    s.sync_blocking()
    s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    with open(s.path, "r+b") as f:  # a b-tree page header of garbage
        f.seek(4096 * 5)
        f.write(b"\x0d\x00\x00\xff\xff\xff\xff\xff")
    e = start_error(cfg(tmp_path))
    assert str(e).startswith(f"storage.path: {s.path} is corrupt (SQLite's quick_check: ")
    assert "\n" not in str(e)


def test_a_database_of_another_program(tmp_path):
    db = sqlite3.connect(tmp_path / "amqpbroker.sqlite3")
    db.execute("CREATE TABLE queues (id INTEGER, title TEXT)")
    db.commit()
    db.close()
    e = start_error(cfg(tmp_path))
    assert str(e).startswith(f"storage.path: {tmp_path / 'amqpbroker.sqlite3'}: table queues "
                             f"has the columns (id, title), expected (vhost, name, ")


def test_a_row_recovery_cannot_read(tmp_path):
    s = SQLiteStore(str(tmp_path))
    s.db.execute("INSERT INTO queues VALUES ('/', X'71', 0, X'00ffffff')")
    s.close()
    e = start_error(cfg(tmp_path))
    assert str(e).startswith(f"storage.path: {s.path}: cannot recover its contents (")
    assert "\n" not in str(e)


def test_data_directory_in_use_by_another_broker(tmp_path):
    first = Server(cfg(tmp_path))
    try:
        e = start_error(cfg(tmp_path))
        assert str(e) == (f"storage.path: the data directory {tmp_path} is in use by another "
                          f"amqpbroker (pid {os.getpid()})")
    finally:
        first.store.close()
    Server(cfg(tmp_path)).store.close()  # closed: the lock is released


# ---------------------------------------------------------------------- hosts and ports


def listen_error(conf: Config) -> tuple[config.StartError, Server]:
    server = Server(conf)

    async def main():
        await server.listen()
    try:
        with pytest.raises(config.StartError) as e:
            anyio.run(main)
    finally:
        server.store.close()
    return e.value, server


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        e, server = listen_error(cfg(tmp_path, port=port))
    assert str(e) == f"listen.port: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert server.ports == []


def test_second_host_cannot_be_bound_closes_the_first(tmp_path):
    """192.0.2.1 (TEST-NET-1) is on no machine's interfaces."""
    e, server = listen_error(cfg(tmp_path, hosts=("127.0.0.1", "192.0.2.1")))
    assert e.key == "listen.hosts[1]"
    assert e.message.startswith("cannot listen on 192.0.2.1:")
    assert e.message.endswith(": Cannot assign requested address")
    assert server.ports == []


def test_host_that_does_not_resolve(tmp_path):
    e, _ = listen_error(cfg(tmp_path, hosts=("nosuchhost.invalid",)))
    assert e.key == "listen.hosts[0]"
    assert e.message.startswith("cannot resolve 'nosuchhost.invalid': ")


def test_default_hosts_listen(tmp_path):
    """127.0.0.1 and ::1 (on a machine without IPv6, ::1 is a warning, not an error)."""
    server = Server(cfg(tmp_path, hosts=("127.0.0.1", "::1")))

    async def main():
        await server.listen()
        await server._listener.aclose()
    try:
        anyio.run(main)
    finally:
        server.store.close()
    assert server.ports[0][0] == "127.0.0.1"


# ---------------------------------------------------------------------- definitions and the store


def test_definitions_the_store_cannot_keep(tmp_path, capsys):
    """A double the store cannot encode stops the start, and check-config says the same
    (it applies the definitions to a throw-away store of the configured kind).  Once the
    store keeps every double, the value must come back exactly instead."""
    f = tmp_path / "defs.yaml"
    f.write_text("definitions:\n  queues:\n    - name: q\n      arguments: {x-a: 1.0e+300}\n")
    conf = config.replace(config.load(str(f)), storage={"path": str(tmp_path / "data")})
    try:
        server = Server(conf)
    except config.ConfigError as e:
        assert str(e).startswith("definitions.queues[0]: the store cannot keep it (")
        assert cli.main(["check-config", str(f)]) == 2
        assert capsys.readouterr().err.strip() == f"amqpbroker: {f}: {e}"
        assert not isinstance(e, config.StartError)
        Server(cfg(tmp_path / "data")).store.close()  # the store was closed, unlocked
        return
    server.store.close()
    again = SQLiteStore(str(tmp_path / "data"))
    assert again.recover().queues[0].arguments == {"x-a": 1.0e300}
    again.close()
    assert cli.main(["check-config", str(f)]) == 0


def test_definitions_are_durable_before_listening(tmp_path):
    f = tmp_path / "defs.yaml"
    f.write_text("definitions:\n  queues:\n    - name: q\n")
    conf = config.replace(config.load(str(f)), storage={"path": str(tmp_path / "data")})
    server = Server(conf)
    assert server.store.synced == server.store.gen
    other = SQLiteStore(str(tmp_path / "data"))  # as after a SIGKILL right now
    assert [q.name for q in other.recover().queues] == ["q"]
    other.db.close()
    server.store.close()


@pytest.mark.parametrize("text", [
    "listen:\n  port: 1\n  hosts: [192.0.2.1]\n",   # not this machine's address
    "storage:\n  path: /dev/null\n",                  # a file here
])
def test_check_config_does_not_depend_on_the_machine(tmp_path, capsys, text):
    f = tmp_path / "machine.yaml"
    f.write_text(text)
    assert cli.main(["check-config", str(f)]) == 0
    assert capsys.readouterr().out.strip() == f"{f}: ok"


def test_config_error_of_unwraps_groups_and_causes():
    inner = config.StartError("listen.port", "taken")
    try:
        raise RuntimeError("wrapped") from inner
    except RuntimeError as e:
        caused = e
    group = BaseExceptionGroup("tasks", [KeyError("x"), ExceptionGroup("g", [caused])])
    assert cli.config_error_of(group) is inner
    assert cli.config_error_of(ValueError("no")) is None
