"""One fixture gives each interop test its broker.

``broker`` is parametrized: ``amqpbroker`` (a real broker subprocess on a free port, one
per test session) always, and ``rabbitmq`` too when ``AMQP_REFERENCE_URL`` is set, so that
every expectation is checked against the real thing.

Markers:
- ``amqpbroker_only(reason)``: inspects our process or tests a feature RabbitMQ lacks;
  skipped against RabbitMQ.
- ``rabbitmq_310_differs(reason)``: Debian's RabbitMQ 3.10 differs from the 3.13/4.2
  reference; skipped against RabbitMQ.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

import pytest

REFERENCE_URL = os.environ.get("AMQP_REFERENCE_URL")
REFERENCE_MGMT_URL = os.environ.get("AMQP_REFERENCE_MGMT_URL")   # http://127.0.0.1:15672/


@dataclasses.dataclass
class Broker:
    kind: str           # "amqpbroker" or "rabbitmq"
    url: str            # amqp://guest:guest@127.0.0.1:PORT/
    host: str
    port: int
    process: subprocess.Popen | None = None
    mgmt_url: str | None = None   # the management API: http://127.0.0.1:PORT/

    def name(self, prefix: str = "t") -> str:
        """A unique entity name, so tests sharing a broker never collide."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"


def start_amqpbroker(*args: str, timeout: float = 20.0,
                     data_dir: str | None = None) -> tuple[subprocess.Popen, int]:
    """Start ``python -m amqpbroker serve --port 0`` and wait for 'listening on HOST:PORT'.
    Its data directory is ``data_dir`` (kept across restarts) or a fresh temporary one.
    The management API is on a free port too (``--management-port 0`` unless the args
    say otherwise; RabbitMQ holds 15672 here): ``proc.management_port``, or None."""
    if data_dir is None:
        data_dir = tempfile.mkdtemp(prefix="amqpbroker-test-")
    cmd = [sys.executable, "-m", "amqpbroker", "serve", "--port", "0", "--data-dir", data_dir,
           *([] if "--management-port" in args else ["--management-port", "0"]),
           *([] if "--prometheus-port" in args else ["--prometheus-port", "0"]), *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    seen = []
    port = None
    want_http = "off" not in args[args.index("--management-port") + 1:][:1] \
        if "--management-port" in args else True
    want_metrics = "off" not in args[args.index("--prometheus-port") + 1:][:1] \
        if "--prometheus-port" in args else True
    proc.prometheus_port = None  # type: ignore[attr-defined]
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m and port is None:
            port = int(m.group(1))
        h = re.search(r"management API listening on https?://127\.0\.0\.1:(\d+)/", line)
        proc.management_port = int(h.group(1)) if h else getattr(proc, "management_port",
                                                                  None)
        pm = re.search(r"Prometheus metrics listening on http://127\.0\.0\.1:(\d+)/", line)
        if pm:
            proc.prometheus_port = int(pm.group(1))
        if port is not None and (proc.management_port or not want_http) and \
                (proc.prometheus_port or not want_metrics):
            # keep draining stderr so the broker never blocks on a full pipe
            import threading

            def drain(stream=proc.stderr, sink=seen):
                for ln in stream:
                    sink.append(ln)
                    del sink[:-500]
            threading.Thread(target=drain, daemon=True).start()
            proc.log_lines = seen  # type: ignore[attr-defined]
            return proc, port
    proc.kill()
    raise RuntimeError("amqpbroker did not start:\n" + "".join(seen))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def _amqpbroker():
    proc, port = start_amqpbroker()
    yield Broker("amqpbroker", f"amqp://guest:guest@127.0.0.1:{port}/", "127.0.0.1", port, proc,
                 f"http://127.0.0.1:{proc.management_port}/")
    stop(proc)


def _brokers():
    kinds = ["amqpbroker"]
    if REFERENCE_URL:
        kinds.append("rabbitmq")
    return kinds


@pytest.fixture(params=_brokers())
def broker(request) -> Broker:
    if request.param == "rabbitmq":
        for mark in ("amqpbroker_only", "rabbitmq_310_differs"):
            m = request.node.get_closest_marker(mark)
            if m:
                pytest.skip(f"{mark}: {m.args[0] if m.args else m.kwargs.get('reason', '')}")
        u = urllib.parse.urlparse(REFERENCE_URL)
        return Broker("rabbitmq", REFERENCE_URL, u.hostname or "127.0.0.1", u.port or 5672,
                      mgmt_url=REFERENCE_MGMT_URL)
    return request.getfixturevalue("_amqpbroker")


@pytest.fixture
def fresh_amqpbroker():
    """A broker of our own for tests that inspect or restart the process."""
    proc, port = start_amqpbroker()
    yield Broker("amqpbroker", f"amqp://guest:guest@127.0.0.1:{port}/", "127.0.0.1", port, proc)
    stop(proc)


@pytest.fixture
def anyio_backend():
    """aio-pika tests run with ``@pytest.mark.anyio`` on asyncio."""
    return "asyncio"
