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
]


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
