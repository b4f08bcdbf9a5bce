"""pytest fixtures with a real AMQP 0-9-1 broker in the test process (registered through
the ``pytest11`` entry point when amqpbroker is installed):

- ``amqp_broker``: one broker per session (per worker under pytest-xdist), on its own
  thread and event loop, memory store, a free loopback port; stopped at the end.
- ``amqp_url``: an ``amqp://`` URL of a fresh vhost and user for this test only (the
  user may do anything in that vhost and nothing elsewhere); deleted after the test, its
  connections closed (320).
- ``amqp_vhost``: ``(broker, vhost)`` of that same vhost, for the helpers: ``broker.wait_for_depth
  (queue, n, vhost)``, ``broker.peek(queue, vhost)``, ``broker.leftovers(vhost)``.
- ``amqp_broker_factory``: ``factory(config=None, data_dir=None)`` starts another broker
  with a configuration (a dict in ``conf/broker.yaml``'s shape: users, limits,
  definitions, ...; SQLite in ``data_dir`` when given) and stops it after the test;
  ``broker.restart()`` starts it again on the same data.
"""
from __future__ import annotations

import pytest

from .testing import InProcessBroker


@pytest.fixture(scope="session")
def amqp_broker():
    broker = InProcessBroker().start()
    yield broker
    broker.stop()


@pytest.fixture
def _amqp_isolated(amqp_broker):
    vhost, user, password = amqp_broker.new_vhost()
    yield vhost, user, password
    amqp_broker.delete_vhost(vhost, user)


@pytest.fixture
def amqp_vhost(amqp_broker, _amqp_isolated):
    return amqp_broker, _amqp_isolated[0]


@pytest.fixture
def amqp_url(amqp_broker, _amqp_isolated):
    return amqp_broker.url(*_amqp_isolated)


@pytest.fixture
def amqp_broker_factory():
    started: list[InProcessBroker] = []

    def factory(config: dict | None = None, data_dir=None) -> InProcessBroker:
        broker = InProcessBroker(config, None if data_dir is None else str(data_dir))
        started.append(broker)
        return broker.start()

    yield factory
    for broker in started:
        broker.stop()
