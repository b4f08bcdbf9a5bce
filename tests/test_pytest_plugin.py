"""The pytest plugin (amqpbroker/pytest_plugin.py), run through pytester in a subprocess:
real clients (pika) against the in-process broker, per-test isolation, the helpers, and a
restart on the same data."""
from __future__ import annotations

import importlib.metadata
import os
import pathlib

import pytest

pytest_plugins = ["pytester"]

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _installed() -> bool:
    return any(ep.value == "amqpbroker.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


@pytest.fixture
def pytester(pytester, monkeypatch):
    # the project's own tree first (a checkout under test may differ from the install)
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return pytester


def run(pytester, *args):
    # without the installed entry point (an older install) the plugin is named explicitly
    extra = () if _installed() else ("-p", "amqpbroker.pytest_plugin")
    return pytester.runpytest_subprocess(*extra, "-p", "no:cacheprovider", *args)


def test_the_entry_point_registers_the_plugin():
    eps = [ep for ep in importlib.metadata.entry_points(group="pytest11")
           if ep.name == "amqpbroker"]
    assert [ep.value for ep in eps] == ["amqpbroker.pytest_plugin"]


def test_each_test_gets_its_own_vhost_and_the_helpers_see_it(pytester):
    pytester.makepyfile("""
        import pika, pytest

        def test_publish_and_peek(amqp_vhost, amqp_url):
            conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
            ch = conn.channel()
            ch.queue_declare("jobs")
            ch.basic_publish("", "jobs", b"one")
            ch.basic_publish("", "jobs", b"two")
            broker, vhost = amqp_vhost
            assert amqp_url.endswith("/" + vhost)
            broker.wait_for_depth("jobs", 2, vhost)
            assert [m.body for m in broker.peek("jobs", vhost)] == [b"one", b"two"]
            assert broker.queue_depth("jobs", vhost) == 2     # peek consumed nothing
            assert broker.leftovers(vhost)["queues"] == {"jobs": 2}
            conn.close()

        def test_the_next_test_sees_nothing_of_it(amqp_url):
            conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                conn.channel().queue_declare("jobs", passive=True)
            assert e.value.reply_code == 404

        def test_a_tests_user_cannot_reach_another_vhost(amqp_broker, amqp_url):
            user = amqp_url.split("//")[1].split(":")[0]
            with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
                pika.BlockingConnection(pika.URLParameters(
                    amqp_url.rsplit("/", 1)[0] + "/%2F"))

        seen = []

        def test_one_broker_per_session(amqp_broker):
            seen.append(amqp_broker)

        def test_the_same_broker_again(amqp_broker):
            assert seen == [amqp_broker] and amqp_broker.port > 0

        def test_wait_for_depth_says_what_it_saw(amqp_vhost):
            broker, vhost = amqp_vhost
            with pytest.raises(AssertionError, match="holds 0 ready messages, not 3"):
                broker.wait_for_depth("nothing", 3, vhost, timeout=0.05)
    """)
    result = run(pytester, "-q")
    result.assert_outcomes(passed=6)


def test_connections_of_a_finished_test_are_closed(pytester):
    pytester.makepyfile("""
        import pika

        kept = []

        def test_leaves_a_connection_open(amqp_url):
            kept.append(pika.BlockingConnection(pika.URLParameters(amqp_url)))

        def test_it_was_closed_by_the_broker():
            conn = kept[0]
            try:
                conn.process_data_events(0.5)
            except pika.exceptions.ConnectionClosedByBroker as e:
                assert e.reply_code == 320 and "is deleted" in e.reply_text
            else:
                raise AssertionError("still open")
    """)
    run(pytester, "-q").assert_outcomes(passed=2)


def test_factory_config_and_restart_on_the_same_data(pytester):
    pytester.makepyfile("""
        import pika, pytest

        def test_restart_keeps_durable_messages(amqp_broker_factory, tmp_path):
            broker = amqp_broker_factory(
                {"users": [{"name": "app", "password": "s3cret"}],
                 "permissions": [{"user": "app", "vhost": "/"}],
                 "definitions": {"queues": [{"name": "orders"}]}},
                data_dir=tmp_path)
            url = broker.url(user="app", password="s3cret")
            conn = pika.BlockingConnection(pika.URLParameters(url))
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", "orders", b"kept",
                             pika.BasicProperties(delivery_mode=2))
            conn.close()
            broker.restart()
            conn = pika.BlockingConnection(pika.URLParameters(
                broker.url(user="app", password="s3cret")))
            method, props, body = conn.channel().basic_get("orders", auto_ack=True)
            assert body == b"kept" and method.redelivered
            conn.close()
            with pytest.raises(pika.exceptions.ProbableAuthenticationError):
                pika.BlockingConnection(pika.URLParameters(broker.url()))  # no guest here
    """)
    run(pytester, "-q").assert_outcomes(passed=1)


def test_a_bad_factory_config_names_the_problem(pytester):
    pytester.makepyfile("""
        import pytest
        from amqpbroker.config import ConfigError

        def test_bad(amqp_broker_factory):
            with pytest.raises(ConfigError, match="bogus"):
                amqp_broker_factory({"bogus": 1})
    """)
    run(pytester, "-q").assert_outcomes(passed=1)


def test_the_readme_example_runs(pytester):
    readme = (ROOT / "README.md").read_text()
    start = readme.index("# test_orders.py")
    code = readme[start:readme.index("```", start)]
    pytester.makepyfile(test_orders=code)
    run(pytester, "-q").assert_outcomes(passed=1)


def test_a_deleted_vhost_leaves_nothing_in_the_store(tmp_path):
    import pika

    from amqpbroker.testing import InProcessBroker
    with InProcessBroker(data_dir=str(tmp_path)) as b:
        vhost, user, password = b.new_vhost()
        conn = pika.BlockingConnection(pika.URLParameters(b.url(vhost, user, password)))
        ch = conn.channel()
        ch.exchange_declare("ex", "fanout", durable=True)
        ch.queue_declare("kept", durable=True)
        ch.queue_bind("kept", "ex")
        ch.basic_publish("ex", "", b"m", pika.BasicProperties(delivery_mode=2))
        conn.close()
        b.wait_for_depth("kept", 1, vhost)
        b.delete_vhost(vhost, user)
        assert vhost not in b.call(lambda: list(b.broker.vhosts))
        b.call(b.broker.add_vhost, vhost)   # the same name again: empty
        assert b.leftovers(vhost) == {"queues": {}, "exchanges": [], "connections": 0}
        b.restart()   # (run-time vhosts are not kept across a restart: add it again)
        b.call(b.broker.add_vhost, vhost)
        b.call(b.broker.vhosts[vhost].restore, b.call(b.broker.store.recover))
        assert b.leftovers(vhost) == {"queues": {}, "exchanges": [], "connections": 0}


def test_under_xdist_each_worker_has_its_own_broker(pytester, tmp_path):
    out = tmp_path / "seen"
    out.mkdir()
    pytester.makepyfile(f"""
        import os, pathlib, pika, pytest

        @pytest.mark.parametrize("i", range(6))
        def test_isolated(amqp_broker, amqp_url, i):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
            ch = conn.channel()
            ch.queue_declare("same-name")          # every test: the same queue name
            ch.basic_publish("", "same-name", b"x")
            assert ch.queue_declare("same-name", passive=True).method.message_count == 1
            conn.close()
            pathlib.Path({str(out)!r}, f"{{worker}}-{{i}}").write_text(
                f"{{os.getpid()}} {{amqp_broker.port}}")
    """)
    run(pytester, "-q", "-n", "2", "-p", "xdist").assert_outcomes(passed=6)
    seen = {p.name.split("-")[0]: set() for p in out.iterdir()}
    for p in out.iterdir():
        seen[p.name.split("-")[0]].add(p.read_text())
    assert len(seen) == 2                              # both workers ran tests
    brokers = [s for s in seen.values()]
    assert all(len(s) == 1 for s in brokers)           # one broker per worker (session)
    assert brokers[0] != brokers[1]
