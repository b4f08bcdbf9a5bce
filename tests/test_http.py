"""The management HTTP API's edge with real HTTP bytes: a broker in the test process
(``testing.InProcessBroker``, management on a free port) and the standard library's
``http.client`` or raw sockets for what a client library would refuse to send."""
from __future__ import annotations

import base64
import http.client
import json
import socket

import pytest

from amqpbroker import __main__ as cli
from amqpbroker import config
from amqpbroker.http import listing
from amqpbroker.testing import InProcessBroker

pytestmark = pytest.mark.timeout(60)

GUEST = "Basic " + base64.b64encode(b"guest:guest").decode()


@pytest.fixture(scope="module")
def broker():
    b = InProcessBroker({"management": {}}).start()
    yield b
    b.stop()


def port_of(broker) -> int:
    return int(broker.management_url.rsplit(":", 1)[1].strip("/"))


def call(broker, method, path, body=None, auth=GUEST, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port_of(broker), timeout=10)
    hdrs = dict(headers or {})
    if auth:
        hdrs["Authorization"] = auth
    data = None if body is None else (body if isinstance(body, bytes) else
                                      json.dumps(body).encode())
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    c.request(method, path, body=data, headers=hdrs)
    r = c.getresponse()
    raw = r.read()
    doc = json.loads(raw) if raw and r.getheader("content-type") == "application/json" else raw
    return r.status, doc, r


def raw_exchange(broker, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port_of(broker)), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def auth(user, pw) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


# ---------------------------------------------------------------------- the edge

def test_overview_and_whoami(broker):
    status, doc, r = call(broker, "GET", "/api/overview")
    assert status == 200 and r.getheader("cache-control") == "no-cache"
    assert {"product_version", "rabbitmq_version", "node", "queue_totals", "object_totals",
            "message_stats", "listeners", "cluster_name"} <= set(doc)
    assert any(lst["protocol"] == "amqp" and lst["port"] == broker.port
               for lst in doc["listeners"])
    assert call(broker, "GET", "/api/whoami")[1] == {"name": "guest", "tags": ["administrator"]}


def test_keep_alive_serves_several_requests_on_one_connection(broker):
    c = http.client.HTTPConnection("127.0.0.1", port_of(broker), timeout=10)
    for _ in range(3):
        assert call(broker, "GET", "/api/whoami", conn=c)[0] == 200
    c.close()


def test_no_credentials_wrong_password_and_no_management_tag(broker):
    status, body, r = call(broker, "GET", "/api/overview", auth=None)
    assert (status, body) == (401, b"")
    assert r.getheader("www-authenticate") == 'Basic realm="RabbitMQ Management"'
    status, doc, r = call(broker, "GET", "/api/overview", auth=auth("guest", "nope"))
    assert (status, doc) == (401, {"error": "not_authorized", "reason": "Login failed"})
    assert r.getheader("www-authenticate")
    status, doc, r = call(broker, "GET", "/api/overview", auth=auth("guest", "nope"),
                          headers={"X-Requested-With": "XMLHttpRequest"})   # the console
    assert status == 401 and r.getheader("www-authenticate") is None
    broker.call(broker.server.broker.add_user, "plain-user", "pw")
    status, doc, r = call(broker, "GET", "/api/overview", auth=auth("plain-user", "pw"))
    assert (status, doc) == (401, {"error": "not_authorised", "reason": "Not management user"})


def test_tags_and_vhost_access(broker):
    b = broker.server.broker
    broker.call(b.add_user, "mgmt-user", "pw", ("management",))
    who = auth("mgmt-user", "pw")
    assert call(broker, "GET", "/api/users", auth=who)[1] == {
        "error": "not_authorised", "reason": "Not administrator user"}
    assert call(broker, "GET", "/api/queues/%2F", auth=who)[:2] == (401, {
        "error": "not_authorised", "reason": "User not authorised to access virtual host"})
    assert call(broker, "GET", "/api/vhosts", auth=who)[1] == []   # sees none of them
    assert call(broker, "GET", "/api/nodes", auth=who)[0] == 401


def test_not_found_method_not_allowed_and_bad_json(broker):
    assert call(broker, "GET", "/api/nope")[:2] == (404, {"error": "Object Not Found",
                                                          "reason": "Not Found"})
    assert call(broker, "GET", "/api/queues/%2F/no-such-queue")[0] == 404
    status, _, r = call(broker, "POST", "/api/overview")
    assert status == 405 and "GET" in r.getheader("allow")
    assert call(broker, "PUT", "/api/queues/%2F/q-bad", body=b"{bad")[:2] == (
        400, {"error": "bad_request", "reason": "not_json"})


def test_a_malformed_request_gets_400_and_its_connection_closed(broker):
    out = raw_exchange(broker, b"NOT HTTP AT ALL\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    out = raw_exchange(broker, b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n"
                               b"\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    # the broker goes on: HTTP and AMQP both answer
    assert call(broker, "GET", "/api/whoami")[0] == 200
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        assert s.recv(7)[:1] == b"\x01"   # a method frame: Connection.Start


def test_a_body_above_the_limit_gets_413(broker):
    out = raw_exchange(broker, b"PUT /api/queues/%2F/big HTTP/1.1\r\nHost: x\r\n"
                               b"Authorization: " + GUEST.encode() + b"\r\n"
                               b"Content-Length: 999999999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ")


def test_a_header_block_above_the_limit_is_refused(broker):
    out = raw_exchange(broker, b"GET /api/whoami HTTP/1.1\r\nX-Big: " + b"a" * 70000 +
                       b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 4")


# ---------------------------------------------------------------------- resources

def test_queue_lifecycle_publish_get_purge_delete(broker):
    q = "/api/queues/%2F/http-q1"
    assert call(broker, "PUT", q, {"durable": False})[0] == 201
    assert call(broker, "PUT", q, {"durable": False})[0] == 204
    status, doc, _ = call(broker, "PUT", q, {"durable": True})
    assert status == 400 and doc["error"] == "bad_request" and "durable" in doc["reason"]
    pub = {"properties": {"headers": {"a": 1}, "delivery_mode": 1}, "routing_key": "http-q1",
           "payload": "hello", "payload_encoding": "string"}
    assert call(broker, "POST", "/api/exchanges/%2F/amq.default/publish", pub)[1] == {
        "routed": True}
    assert call(broker, "POST", "/api/exchanges/%2F/amq.default/publish",
                {**pub, "routing_key": "nowhere"})[1] == {"routed": False}
    got = call(broker, "POST", f"{q}/get", {"count": 5, "ackmode": "ack_requeue_true",
                                            "encoding": "auto"})[1]
    assert got == [{"payload_bytes": 5, "redelivered": False, "exchange": "",
                    "routing_key": "http-q1", "message_count": 0,
                    "properties": {"headers": {"a": 1}, "delivery_mode": 1},
                    "payload": "hello", "payload_encoding": "string"}]
    got = call(broker, "POST", f"{q}/get", {"count": 1, "ackmode": "ack_requeue_true",
                                            "encoding": "base64", "truncate": 2})[1]
    assert got[0]["redelivered"] is True and got[0]["payload"] == "aGU="
    assert call(broker, "GET", q)[1]["messages"] == 1
    assert call(broker, "DELETE", f"{q}/contents")[0] == 204
    assert call(broker, "GET", q)[1]["messages"] == 0
    assert call(broker, "DELETE", q)[0] == 204
    assert call(broker, "DELETE", q)[0] == 404


def test_exchange_declare_bind_and_unbind(broker):
    assert call(broker, "PUT", "/api/exchanges/%2F/http-x", {"type": "topic"})[0] == 201
    assert call(broker, "GET", "/api/exchanges/%2F/http-x")[1]["type"] == "topic"
    call(broker, "PUT", "/api/queues/%2F/http-bq", {"durable": False})
    status, _, r = call(broker, "POST", "/api/bindings/%2F/e/http-x/q/http-bq",
                        {"routing_key": "a.#", "arguments": {}})
    assert status == 201 and r.getheader("location") == "http-bq/a.%2523"
    found = call(broker, "GET", "/api/bindings/%2F/e/http-x/q/http-bq")[1]
    assert [(b["routing_key"], b["properties_key"]) for b in found] == [("a.#", "a.%23")]
    assert call(broker, "GET", "/api/bindings/%2F/e/http-x/q/http-bq/a.%2523")[0] == 200
    assert call(broker, "GET", "/api/bindings/%2F/e/http-x/q/http-bq/a.%23")[0] == 200
    assert call(broker, "DELETE", "/api/bindings/%2F/e/http-x/q/http-bq/a.%23")[0] == 204
    assert call(broker, "GET", "/api/bindings/%2F/e/http-x/q/http-bq")[1] == []
    assert call(broker, "DELETE", "/api/exchanges/%2F/http-x")[0] == 204
    call(broker, "DELETE", "/api/queues/%2F/http-bq")


def test_vhosts_users_and_permissions(broker):
    assert call(broker, "PUT", "/api/vhosts/http-vh")[0] == 201
    assert call(broker, "PUT", "/api/vhosts/http-vh")[0] == 204
    assert call(broker, "PUT", "/api/users/http-u", {"password": "s3", "tags": "management"}
                )[0] == 201
    assert call(broker, "PUT", "/api/permissions/http-vh/http-u",
                {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    who = auth("http-u", "s3")
    assert call(broker, "GET", "/api/whoami", auth=who)[1] == {"name": "http-u",
                                                              "tags": ["management"]}
    assert [v["name"] for v in call(broker, "GET", "/api/vhosts", auth=who)[1]] == ["http-vh"]
    assert call(broker, "PUT", "/api/queues/http-vh/mine", {}, auth=who)[0] == 201
    assert call(broker, "GET", "/api/permissions/http-vh/http-u")[1] == {
        "user": "http-u", "vhost": "http-vh", "configure": ".*", "write": ".*", "read": ".*"}
    assert call(broker, "PUT", "/api/permissions/http-vh/http-u", {"configure": ".*"}
                )[0] == 400
    assert call(broker, "DELETE", "/api/permissions/http-vh/http-u")[0] == 204
    assert call(broker, "DELETE", "/api/users/http-u")[0] == 204
    assert call(broker, "GET", "/api/whoami", auth=who)[0] == 401
    assert call(broker, "DELETE", "/api/vhosts/http-vh")[0] == 204
    assert call(broker, "GET", "/api/vhosts/http-vh")[0] == 404


def test_list_parameters(broker):
    for n in ("lp-b", "lp-a", "lp-c"):
        call(broker, "PUT", f"/api/queues/%2F/{n}", {"durable": False})
    doc = call(broker, "GET", "/api/queues/%2F?page=1&page_size=2&name=lp-&sort=name"
                              "&sort_reverse=true&columns=name,durable")[1]
    assert doc["items"] == [{"name": "lp-c", "durable": False},
                            {"name": "lp-b", "durable": False}]
    assert {k: doc[k] for k in ("filtered_count", "item_count", "page", "page_count",
                                "page_size")} == {"filtered_count": 3, "item_count": 2,
                                                  "page": 1, "page_count": 2, "page_size": 2}
    status, doc, _ = call(broker, "GET", "/api/queues/%2F?page=9&page_size=2&name=lp-")
    assert status == 400 and doc["error"] == "page_out_of_range"
    doc = call(broker, "GET", "/api/queues/%2F?page=1&name=%5Elp-%5Bab%5D&use_regex=true"
                              "&columns=name")[1]
    assert doc["items"] == [{"name": "lp-a"}, {"name": "lp-b"}]
    for n in ("lp-b", "lp-a", "lp-c"):
        call(broker, "DELETE", f"/api/queues/%2F/{n}")


def test_definitions_health_and_aliveness(broker):
    defs = call(broker, "GET", "/api/definitions")[1]
    assert {"rabbit_version", "users", "vhosts", "permissions", "queues", "exchanges",
            "bindings"} <= set(defs)
    assert call(broker, "GET", "/api/health/checks/alarms")[1] == {"status": "ok"}
    assert call(broker, "GET", "/api/aliveness-test/%2F")[1] == {"status": "ok"}


def test_listing_errors_directly():
    with pytest.raises(Exception) as e:
        listing.apply([], {"page": ["x"]})
    assert e.value.reason == "Pagination parameters are invalid"
    with pytest.raises(Exception) as e:
        listing.apply([], {"page": ["1"], "page_size": ["501"]})
    assert e.value.error == "invalid_pagination_parameters"
    assert listing.apply([{"name": "a", "x": 1}], {"columns": ["x"]}) == [{"x": 1}]


# ---------------------------------------------------------------------- config and start

def test_management_config_keys():
    cfg = config.from_dict({"management": {"port": None}})
    assert cfg.management.port is None and cfg.management.hosts == ("127.0.0.1", "::1")
    with pytest.raises(config.ConfigError, match=r"^management.port: expected an integer"):
        config.from_dict({"management": {"port": 70000}})
    with pytest.raises(config.ConfigError, match=r"^management.tls.verify: expected one of"):
        config.from_dict({"management": {"tls": {"certfile": "c", "keyfile": "k",
                                                 "verify": "maybe"}}})
    assert config.from_dict({"management": {"tls": {"certfile": "c", "keyfile": "k"}}}) \
        .management.tls.port == 15671


def test_a_management_port_in_use_stops_the_start(tmp_path, capsys):
    """As listen.port: one line naming the key (the flag when it came from one)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        f = tmp_path / "b.yaml"
        f.write_text(f"management: {{hosts: [127.0.0.1], port: {port}}}\n"
                     f"storage: {{backend: memory}}\n")
        assert cli.main(["serve", "--port", "0", "--host", "127.0.0.1", "--config",
                         str(f)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"amqpbroker: {f}: management.port: cannot listen on 127.0.0.1:{port}: "
            f"Address already in use")
        assert cli.main(["serve", "--port", "0", "--host", "127.0.0.1", "--config", str(f),
                         "--management-port", str(port)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"amqpbroker: --management-port: cannot listen on 127.0.0.1:{port}: "
            f"Address already in use")


def test_the_management_port_flag_is_checked(capsys):
    assert cli.main(["serve", "--management-port", "nope"]) == 2
    assert capsys.readouterr().err.strip() == \
        "amqpbroker: --management-port: expected 0..65535 or off, got 'nope'"


def test_https_with_management_tls(tmp_path):
    """management.tls: listen.tls's keys, the same TLS listener code, HTTPS answers."""
    import ssl

    from .tlscerts import CA
    ca = CA(tmp_path)
    certfile, keyfile = ca.issue("server", "localhost", server=True)
    b = InProcessBroker({"management": {"tls": {"certfile": certfile, "keyfile": keyfile,
                                                "port": 0}}}).start()
    try:
        ((_host, port),) = b.server.ports_of["management.tls.port"]
        ctx = ssl.create_default_context(cafile=str(ca.path))
        c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
        c.request("GET", "/api/whoami", headers={"Authorization": GUEST})
        r = c.getresponse()
        assert (r.status, json.loads(r.read())) == (200, {"name": "guest",
                                                          "tags": ["administrator"]})
        c.close()
    finally:
        b.stop()


def test_a_management_certificate_that_cannot_be_read_stops_the_start(tmp_path):
    b = InProcessBroker({"management": {"tls": {"certfile": str(tmp_path / "none.pem"),
                                                "keyfile": str(tmp_path / "none.key"),
                                                "port": 0}}})
    with pytest.raises(config.StartError) as e:
        b.start()
    assert e.value.key == "management.tls.certfile"


@pytest.mark.parametrize("path,body,reason", [
    ("/api/queues/%2F/big-arg", {"arguments": {"x-max-length": 1 << 70}},
     f"arguments.x-max-length: expected a 64-bit signed integer, got {1 << 70}"),
    ("/api/queues/%2F/" + "q" * 300, {}, "queue should be less than 255 bytes, actually was "
                                         "300\n"),
    ("/api/exchanges/%2F/" + "x" * 256, {"type": "direct"},
     "exchange should be less than 255 bytes, actually was 256\n"),
])
def test_declarations_the_wire_could_not_carry_are_400(broker, path, body, reason):
    assert call(broker, "PUT", path, body)[:2] == (400, {"error": "bad_request",
                                                         "reason": reason})


@pytest.mark.parametrize("change,reason", [
    ({"properties": {"priority": 300}}, "property 'priority': expected an integer 0..255"),
    ({"properties": {"timestamp": -1}},
     "property 'timestamp': expected an integer 0..18446744073709551615"),
    ({"properties": {"headers": {"a": 1 << 70}}},
     f"properties.headers.a: expected a 64-bit signed integer, got {1 << 70}"),
    ({"properties": {"bogus": 1}}, "unknown property 'bogus'"),
    ({"routing_key": "k" * 256}, "routing_key: expected at most 255 bytes"),
    ({"payload": "!!", "payload_encoding": "base64"}, None),
    ({"payload_encoding": "hex"}, "payload_encoding: expected string or base64, got 'hex'"),
    ({"payload": 5}, None),
])
def test_publishes_that_cannot_be_a_message_are_400(broker, change, reason):
    pub = {"properties": {}, "routing_key": "k", "payload": "x", "payload_encoding": "string",
           **change}
    status, doc, _ = call(broker, "POST", "/api/exchanges/%2F/amq.direct/publish", pub)
    assert status == 400 and doc["error"] == "bad_request"
    if reason is not None:
        assert doc["reason"] == reason


def test_pipelined_requests_are_answered_in_order(broker):
    one = b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: " + GUEST.encode() + b"\r\n\r\n"
    last = one.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    out = raw_exchange(broker, one + one + last)
    assert out.count(b"HTTP/1.1 200 OK") == 3


def test_an_idle_connection_is_closed(broker):
    http_server = broker.server.http
    guard = (http_server._guard.last, http_server._guard.repeats)
    before = http_server.idle_timeout
    http_server.idle_timeout = 0.2
    try:
        with socket.create_connection(("127.0.0.1", port_of(broker)), timeout=5) as s:
            assert s.recv(10) == b""   # closed by the server, nothing sent
    finally:
        http_server.idle_timeout = before
    # an ordinary end, not an exception caught by the connection's guard
    assert (http_server._guard.last, http_server._guard.repeats) == guard


GARBAGE = [b"\x00\xff" * 50, b"GET /nothing HTTP/9.9\r\n\r\n", b"GET /api/whoami HTTP/1.1\r\n\r\n",
           b"POST /api/definitions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"zz\r\n", b"GET /api/" + b"a/" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
           b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nHost: y\r\nContent-Length: 1\r\n"
           b"Content-Length: 2\r\n\r\n", b"\r\n\r\n\r\n", b"G"]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_never_disturbs_the_broker(broker, data):
    guards = (broker.server.http._guard, broker.server.http._app_guard)
    before = [(g.last, g.repeats) for g in guards]
    with socket.create_connection(("127.0.0.1", port_of(broker)), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = s.recv(65536)
    assert out == b"" or out.startswith(b"HTTP/1.1 4")
    assert call(broker, "GET", "/api/whoami")[0] == 200
    assert [(g.last, g.repeats) for g in guards] == before   # refused, not crashed


def test_a_handler_that_raises_is_a_500_and_the_connection_goes_on(broker):
    http_server = broker.server.http
    app = http_server.app

    def broken(req):
        if req.target == "/api/boom":
            raise RuntimeError("a bug")
        return app(req)
    http_server.app = broken
    try:
        c = http.client.HTTPConnection("127.0.0.1", port_of(broker), timeout=10)
        status, doc, _ = call(broker, "GET", "/api/boom", conn=c)
        assert (status, doc) == (500, {"error": "internal_error",
                                       "reason": "see the broker log"})
        assert call(broker, "GET", "/api/whoami", conn=c)[0] == 200   # same connection
    finally:
        http_server.app = app


def test_a_body_that_stops_coming_is_a_408(broker):
    http_server = broker.server.http
    before = http_server.read_timeout
    http_server.read_timeout = 0.3
    try:
        with socket.create_connection(("127.0.0.1", port_of(broker)), timeout=10) as s:
            s.sendall(b"PUT /api/queues/%2F/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10"
                      b"\r\n\r\nabc")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
    finally:
        http_server.read_timeout = before
    assert out.startswith(b"HTTP/1.1 408 ")


def test_the_alarms_check_fails_during_a_memory_alarm(broker):
    b = broker.server.broker
    broker.call(setattr, b, "memory_alarm", True)
    try:
        assert call(broker, "GET", "/api/health/checks/alarms")[:2] == (503, {
            "status": "failed", "reason": "There are alarms in effect in the cluster",
            "alarms": [{"node": "amqpbroker", "resource": "memory"}]})
        assert call(broker, "GET", "/api/nodes")[1][0]["mem_alarm"] is True
    finally:
        broker.call(setattr, b, "memory_alarm", False)
    assert call(broker, "GET", "/api/health/checks/alarms")[:2] == (200, {"status": "ok"})


def test_clients_past_the_connection_limit_get_503(broker):
    http_server = broker.server.http
    before = http_server.max_connections
    http_server.max_connections = 1
    try:
        with socket.create_connection(("127.0.0.1", port_of(broker)), timeout=10) as first:
            first.sendall(b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: " +
                          GUEST.encode() + b"\r\n\r\n")
            assert first.recv(65536).startswith(b"HTTP/1.1 200 ")   # it is being served
            out = raw_exchange(broker, b"")
            head, _, body = out.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ")
            assert json.loads(body) == {"error": "service_unavailable",
                                        "reason": "too many clients"}
            assert f"content-length: {len(body)}".encode() in head
    finally:
        http_server.max_connections = before
    assert call(broker, "GET", "/api/whoami")[0] == 200
    assert http_server.active <= 1


def test_the_console_files_are_served_without_a_login(broker):
    status, body, r = call(broker, "GET", "/", auth=None)
    assert status == 200 and r.getheader("content-type") == "text/html; charset=utf-8"
    assert b'<script src="/console/console.js">' in body
    for path, ctype in (("/console/console.js", "text/javascript"),
                        ("/console/console.css", "text/css")):
        status, body, r = call(broker, "GET", path, auth=None)
        assert status == 200 and r.getheader("content-type").startswith(ctype) and body
    assert call(broker, "POST", "/", auth=None)[0] == 405
    assert call(broker, "GET", "/console/nothing.js", auth=None)[0] == 404
