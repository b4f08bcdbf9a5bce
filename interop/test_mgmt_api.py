"""The management HTTP API against both brokers, with a plain HTTP client (urllib): status
codes, error bodies, the fields we claim and their values.  RabbitMQ has more fields than
we do: a test compares the keys it names.  RabbitMQ's statistics (queue depths, the
connections list) lag by its collection interval, so those are polled.

RabbitMQ is reached through ``AMQP_REFERENCE_MGMT_URL`` (``.ci/run`` enables
rabbitmq_management); ours runs on a free port (``--management-port 0``)."""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pytest

pytestmark = pytest.mark.timeout(120)


class API:
    def __init__(self, broker, user: str = "guest", password: str = "guest"):
        if broker.mgmt_url is None:
            pytest.skip("AMQP_REFERENCE_MGMT_URL is not set")
        self.base = broker.mgmt_url.rstrip("/")
        self.kind = broker.kind
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def as_user(self, user: str, password: str) -> "API":
        other = object.__new__(API)
        other.base, other.kind = self.base, self.kind
        other.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return other

    def call(self, method: str, path: str, body=None, headers=None, auth=True):
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if auth:
            req.add_header("Authorization", self.auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                status, raw, hdrs = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, raw, hdrs = e.code, e.read(), e.headers
        doc = json.loads(raw) if raw and "json" in (hdrs.get("content-type") or "") else raw
        return status, doc, hdrs

    def get(self, path):
        return self.call("GET", path)

    def until(self, path, check, timeout=12.0):
        """Poll ``path`` until ``check(doc)`` (RabbitMQ's stats lag)."""
        deadline = time.monotonic() + timeout
        while True:
            status, doc, _ = self.get(path)
            if status == 200 and check(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {status} {doc}")
            time.sleep(0.25)


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


@pytest.fixture
def api(broker):
    return API(broker)


# ---------------------------------------------------------------------- auth and errors

def test_auth_failures(api, broker):
    status, body, hdrs = api.call("GET", "/api/overview", auth=False)
    assert status == 401 and hdrs["www-authenticate"] == 'Basic realm="RabbitMQ Management"'
    status, doc, hdrs = api.as_user("guest", "wrong").get("/api/overview")
    assert (status, doc) == (401, {"error": "not_authorized", "reason": "Login failed"})
    user = broker.name("mgmt-u")
    assert api.call("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})[0] == 201
    try:
        status, doc, _ = api.as_user(user, "pw").get("/api/overview")
        assert (status, doc) == (401, {"error": "not_authorised",
                                       "reason": "Not management user"})
        assert api.call("PUT", f"/api/users/{user}", {"password": "pw",
                                                      "tags": "management"})[0] == 204
        who = api.as_user(user, "pw")
        assert who.get("/api/whoami")[1] == {"name": user, "tags": ["management"]}
        assert who.get("/api/users")[:2] == (401, {"error": "not_authorised",
                                                   "reason": "Not administrator user"})
        assert who.get("/api/queues/%2F")[:2] == (401, {
            "error": "not_authorised", "reason": "User not authorised to access virtual host"})
    finally:
        assert api.call("DELETE", f"/api/users/{user}")[0] == 204


def test_not_found_method_not_allowed_bad_json(api, broker):
    assert api.get("/api/queues/%2F/" + broker.name("missing"))[:2] == (
        404, {"error": "Object Not Found", "reason": "Not Found"})
    assert api.get("/api/vhosts/" + broker.name("nope"))[0] == 404
    assert api.get("/api/no-such-thing")[0] == 404
    status, _, hdrs = api.call("POST", "/api/overview")
    assert status == 405 and "GET" in hdrs["allow"]
    name = broker.name("q")
    assert api.call("PUT", f"/api/queues/%2F/{name}", b"{bad")[:2] == (
        400, {"error": "bad_request", "reason": "not_json"})


# ---------------------------------------------------------------------- broker-wide

def test_overview_whoami_nodes_vhosts(api):
    status, doc, hdrs = api.get("/api/overview")
    assert status == 200 and hdrs["content-type"] == "application/json"
    assert {"rabbitmq_version", "product_version", "node", "cluster_name", "queue_totals",
            "object_totals", "message_stats", "listeners", "management_version",
            "rates_mode", "exchange_types"} <= set(doc)
    assert {"connections", "channels", "consumers", "exchanges", "queues"} <= \
        set(doc["object_totals"])
    assert {lst["protocol"] for lst in doc["listeners"]} >= {"amqp", "http"}
    assert api.get("/api/whoami")[1] == {"name": "guest", "tags": ["administrator"]}
    (node,) = api.get("/api/nodes")[1]
    assert {"name", "running", "mem_alarm", "disk_free_alarm", "uptime"} <= set(node)
    assert api.get("/api/overview?columns=node,object_totals.queues")[1].keys() == {
        "node", "object_totals"}
    assert api.get("/api/vhosts/%2F?columns=name")[1] == {"name": "/"}
    vh = api.get("/api/vhosts/%2F")[1]
    assert {"name", "messages", "messages_ready", "messages_unacknowledged",
            "tracing"} <= set(vh) and vh["name"] == "/"
    assert "/" in [v["name"] for v in api.get("/api/vhosts")[1]]
    assert api.get("/api/health/checks/alarms")[1] == {"status": "ok"}
    assert api.get("/api/aliveness-test/%2F")[1] == {"status": "ok"}


def test_vhost_user_permission_lifecycle(api, broker):
    vhost, user = broker.name("mgmt-vh"), broker.name("mgmt-user")
    try:
        assert api.call("PUT", f"/api/vhosts/{vhost}")[0] == 201
        assert api.call("PUT", f"/api/vhosts/{vhost}")[0] == 204
        assert api.call("PUT", f"/api/users/{user}", {"password": "s3cret",
                                                      "tags": "management"})[0] == 201
        u = api.get(f"/api/users/{user}")[1]
        assert {"name", "tags", "password_hash", "hashing_algorithm"} <= set(u)
        assert (u["tags"], u["hashing_algorithm"]) == (
            ["management"], "rabbit_password_hashing_sha256")
        perm = {"configure": "^mine", "write": ".*", "read": ".*"}
        assert api.call("PUT", f"/api/permissions/{vhost}/{user}", perm)[0] == 201
        assert api.call("PUT", f"/api/permissions/{vhost}/{user}", perm)[0] == 204
        assert api.get(f"/api/permissions/{vhost}/{user}")[1] == {
            "user": user, "vhost": vhost, **perm}
        # (the vhost's creator got every permission on it, as RabbitMQ gives them)
        assert sorted(p["user"] for p in api.get(f"/api/vhosts/{vhost}/permissions")[1]) \
            == sorted(["guest", user])
        who = api.as_user(user, "s3cret")
        assert [v["name"] for v in who.get("/api/vhosts")[1]] == [vhost]
        assert who.get(f"/api/vhosts/{vhost}")[:2] == (401, {
            "error": "not_authorised", "reason": "Not administrator user"})
        assert sorted(e["name"] for e in who.get(f"/api/exchanges/{vhost}")[1]) == [
            "", "amq.direct", "amq.fanout", "amq.headers", "amq.match",
            "amq.rabbitmq.trace", "amq.topic"]
        assert who.call("PUT", f"/api/queues/{vhost}/mine-q", {"durable": False})[0] == 201
        assert who.call("PUT", f"/api/queues/{vhost}/other-q", {"durable": False})[:2] == (
            401, {"error": "not_authorised", "reason": "Access refused."})
        assert api.call("PUT", f"/api/permissions/{vhost}/{user}", {"configure": ".*"}
                        )[0] == 400
        assert api.call("PUT", f"/api/permissions/{vhost}/{broker.name('nobody')}", perm
                        )[:2] == (400, {"error": "bad_request",
                                        "reason": "vhost_or_user_not_found"})
        assert api.call("DELETE", f"/api/permissions/{vhost}/{user}")[0] == 204
        assert api.get(f"/api/permissions/{vhost}/{user}")[0] == 404
    finally:
        api.call("DELETE", f"/api/users/{user}")
        api.call("DELETE", f"/api/vhosts/{vhost}")
    assert api.get(f"/api/vhosts/{vhost}")[0] == 404
    assert api.get(f"/api/users/{user}")[0] == 404


# ---------------------------------------------------------------------- topology

def test_queue_put_publish_get_purge_delete(api, broker):
    name = broker.name("mgmt-q")
    path = f"/api/queues/%2F/{q(name)}"
    assert api.call("PUT", path, {"durable": False, "arguments": {"x-max-length": 10}}
                    )[0] == 201
    assert api.call("PUT", path, {"durable": False, "arguments": {"x-max-length": 10}}
                    )[0] == 204
    status, doc, _ = api.call("PUT", path, {"durable": True})
    assert status == 400 and doc == {"error": "bad_request", "reason": (
        f"inequivalent arg 'durable' for queue '{name}' in vhost '/': received 'true' but "
        f"current is 'false'")}
    info = api.get(path)[1]
    assert {k: info[k] for k in ("name", "vhost", "durable", "auto_delete", "exclusive",
                                 "arguments")} == {
        "name": name, "vhost": "/", "durable": False, "auto_delete": False,
        "exclusive": False, "arguments": {"x-max-length": 10}}
    pub = {"properties": {"headers": {"h": "v"}, "content_type": "text/plain"},
           "routing_key": name, "payload": "hello", "payload_encoding": "string"}
    for _ in range(2):
        assert api.call("POST", "/api/exchanges/%2F/amq.default/publish", pub)[1] == {
            "routed": True}
    got = api.call("POST", f"{path}/get", {"count": 1, "ackmode": "ack_requeue_true",
                                           "encoding": "auto"})[1]
    assert got == [{"payload_bytes": 5, "redelivered": False, "exchange": "",
                    "routing_key": name, "message_count": 1,
                    "properties": {"headers": {"h": "v"}, "content_type": "text/plain"},
                    "payload": "hello", "payload_encoding": "string"}]
    got = api.call("POST", f"{path}/get", {"count": 5, "ackmode": "ack_requeue_false",
                                           "encoding": "base64", "truncate": 3})[1]
    assert [(m["payload"], m["payload_encoding"], m["payload_bytes"]) for m in got] == [
        ("aGVs", "base64", 5)] * 2
    assert got[0]["redelivered"] is True and got[1]["redelivered"] is False
    assert api.call("POST", f"{path}/get", {"count": 1, "ackmode": "ack_requeue_true",
                                            "encoding": "auto"})[1] == []
    api.call("POST", "/api/exchanges/%2F/amq.default/publish", pub)
    assert api.call("DELETE", f"{path}/contents")[0] == 204
    assert api.call("POST", f"{path}/get", {"count": 1, "ackmode": "ack_requeue_true",
                                            "encoding": "auto"})[1] == []
    status, doc, _ = api.call("POST", f"{path}/get", {"count": 1, "ackmode": "nope",
                                                      "encoding": "auto"})
    # RabbitMQ 3.10 crashes on an unknown ackmode (500); we say what is wrong
    assert status == (500 if broker.kind == "rabbitmq" else 400)
    api.call("POST", "/api/exchanges/%2F/amq.default/publish", pub)
    assert api.call("DELETE", f"{path}?if-empty=true")[:2] == (400, {
        "error": "bad_request", "reason": f"queue '{name}' in vhost '/' not empty"})
    assert api.call("DELETE", path)[0] == 204
    assert api.call("DELETE", path)[0] == 404


def test_exchange_errors(api, broker):
    missing = broker.name("nox")
    pub = {"properties": {}, "routing_key": "k", "payload": "x", "payload_encoding": "string"}
    assert api.call("POST", f"/api/exchanges/%2F/{missing}/publish", pub)[:2] == (400, {
        "error": "bad_request", "reason": f"404 NOT_FOUND - no exchange '{missing}' in "
                                          f"vhost '/'"})
    status, doc, _ = api.call("POST", "/api/exchanges/%2F/amq.direct/publish",
                              {"routing_key": "k"})
    assert status == 400 and doc["error"] == "bad_request"
    assert api.call("PUT", f"/api/exchanges/%2F/{missing}", {"type": "zzz"})[:2] == (400, {
        "error": "bad_request", "reason": "unknown exchange type 'zzz'"})
    for name in ("amq.default", "amq.direct"):
        assert api.call("DELETE", f"/api/exchanges/%2F/{name}")[:2] == (401, {
            "error": "not_authorised", "reason": "Access refused."})
    name = broker.name("x-default-type")
    assert api.call("PUT", f"/api/exchanges/%2F/{name}", {})[0] == 201
    try:
        assert api.get(f"/api/exchanges/%2F/{name}")[1]["type"] == "direct"
    finally:
        api.call("DELETE", f"/api/exchanges/%2F/{name}")
    assert api.call("DELETE", "/api/connections/" + q("1.2.3.4:5 -> 6.7.8.9:10"))[0] == 404
    assert api.call("DELETE", "/api/vhosts/" + broker.name("novh"))[0] == 404


def test_a_user_without_a_password(api, broker):
    user = broker.name("nopw")
    assert api.call("PUT", f"/api/users/{user}", {"tags": ""})[0] == 201
    try:
        assert api.as_user(user, "").get("/api/whoami")[0] == 401
    finally:
        assert api.call("DELETE", f"/api/users/{user}")[0] == 204


def test_head(api):
    status, body, hdrs = api.call("HEAD", "/api/overview")
    assert status == 200 and body == b"" and int(hdrs["content-length"]) > 0


def test_exchange_declare_publish_bindings(api, broker):
    ex, qn = broker.name("mgmt-x"), broker.name("mgmt-bq")
    xp, qp = f"/api/exchanges/%2F/{ex}", f"/api/queues/%2F/{qn}"
    assert api.call("PUT", xp, {"type": "topic", "durable": False, "auto_delete": False,
                                "internal": False, "arguments": {}})[0] == 201
    assert api.call("PUT", xp, {"type": "topic", "durable": False})[0] == 204
    info = api.get(xp)[1]
    assert {k: info[k] for k in ("name", "vhost", "type", "durable", "auto_delete",
                                 "internal", "arguments")} == {
        "name": ex, "vhost": "/", "type": "topic", "durable": False, "auto_delete": False,
        "internal": False, "arguments": {}}
    api.call("PUT", qp, {"durable": False})
    try:
        status, _, hdrs = api.call("POST", f"/api/bindings/%2F/e/{ex}/q/{qn}",
                                   {"routing_key": "a.*", "arguments": {}})
        assert (status, hdrs["location"]) == (201, f"{qn}/a.%252A")
        (b,) = api.get(f"/api/bindings/%2F/e/{ex}/q/{qn}")[1]
        assert b == {"source": ex, "vhost": "/", "destination": qn,
                     "destination_type": "queue", "routing_key": "a.*", "arguments": {},
                     "properties_key": "a.%2A"}
        assert api.get(f"/api/bindings/%2F/e/{ex}/q/{qn}/a.%252A")[1] == b
        assert [x["source"] for x in api.get(f"{qp}/bindings")[1]] == ["", ex]
        assert [x["destination"] for x in api.get(f"{xp}/bindings/source")[1]] == [qn]
        pub = {"properties": {}, "routing_key": "a.b", "payload": "aGk=",
               "payload_encoding": "base64"}
        assert api.call("POST", f"{xp}/publish", pub)[1] == {"routed": True}
        assert api.call("POST", f"{xp}/publish", {**pub, "routing_key": "b.c"})[1] == {
            "routed": False}
        got = api.call("POST", f"{qp}/get", {"count": 1, "ackmode": "ack_requeue_false",
                                             "encoding": "auto"})[1]
        assert [(m["payload"], m["exchange"], m["routing_key"]) for m in got] == [
            ("hi", ex, "a.b")]
        assert api.call("DELETE", f"/api/bindings/%2F/e/{ex}/q/{qn}/a.%2A")[0] == 204
        assert api.get(f"/api/bindings/%2F/e/{ex}/q/{qn}")[1] == []
        assert api.call("DELETE", f"/api/bindings/%2F/e/{ex}/q/{qn}/a.%2A")[0] == 404
    finally:
        api.call("DELETE", qp)
        assert api.call("DELETE", xp)[0] == 204
    assert api.get(xp)[0] == 404


def test_list_parameters(api, broker):
    prefix = broker.name("lp")
    names = [f"{prefix}-b", f"{prefix}-a", f"{prefix}-c"]
    for n in names:
        api.call("PUT", f"/api/queues/%2F/{n}", {"durable": False})
    try:
        doc = api.get(f"/api/queues/%2F?page=1&page_size=2&name={prefix}&sort=name"
                      f"&sort_reverse=true&columns=name,durable")[1]
        assert {k: doc[k] for k in ("filtered_count", "item_count", "page", "page_count",
                                    "page_size")} == {
            "filtered_count": 3, "item_count": 2, "page": 1, "page_count": 2, "page_size": 2}
        assert doc["items"] == [{"name": f"{prefix}-c", "durable": False},
                                {"name": f"{prefix}-b", "durable": False}]
        assert doc["total_count"] >= 3
        doc = api.get(f"/api/queues/%2F?page=2&page_size=2&name={prefix}&sort=name"
                      f"&columns=name")[1]
        assert doc["items"] == [{"name": f"{prefix}-c"}]
        doc = api.get(f"/api/queues/%2F?page=1&name=" + q(f"^{prefix}-[ab]") +
                      "&use_regex=true&columns=name&sort=name")[1]
        assert doc["items"] == [{"name": f"{prefix}-a"}, {"name": f"{prefix}-b"}]
        status, doc, _ = api.get(f"/api/queues/%2F?page=9&page_size=2&name={prefix}")
        assert (status, doc["error"]) == (400, "page_out_of_range")
        assert api.get("/api/queues/%2F?page=1&page_size=501")[1]["error"] == \
            "invalid_pagination_parameters"
        assert api.get("/api/queues/%2F?page=x")[1] == {
            "error": "bad_request", "reason": "Pagination parameters are invalid"}
    finally:
        for n in names:
            api.call("DELETE", f"/api/queues/%2F/{n}")


# ---------------------------------------------------------------------- connections

def test_connections_channels_consumers_and_close(api, broker):
    name = broker.name("conn")
    params = pika.URLParameters(broker.url)
    params.client_properties = {"connection_name": name}
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    qn = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(qn, lambda *a: None, consumer_tag=name)
    try:
        conns = api.until("/api/connections", lambda d: any(
            c["client_properties"].get("connection_name") == name for c in d))
        (c,) = [c for c in conns if c["client_properties"].get("connection_name") == name]
        assert {"name", "user", "vhost", "peer_host", "peer_port", "channels", "protocol",
                "ssl", "frame_max", "channel_max", "state"} <= set(c)
        assert (c["user"], c["vhost"], c["protocol"], c["ssl"]) == (
            "guest", "/", "AMQP 0-9-1", False)
        cpath = f"/api/connections/{q(c['name'])}"
        assert api.get(cpath)[1]["name"] == c["name"]
        chans = api.until(f"{cpath}/channels", lambda d: len(d) == 1)
        assert {"name", "number", "connection_details", "consumer_count", "prefetch_count",
                "confirm", "transactional", "vhost", "user"} <= set(chans[0])
        assert chans[0]["connection_details"]["name"] == c["name"]
        assert chans[0]["name"] == f"{c['name']} (1)"
        assert api.get(f"/api/channels/{q(chans[0]['name'])}")[1]["number"] == 1
        cons = api.until("/api/consumers/%2F", lambda d: any(
            x["consumer_tag"] == name for x in d))
        (x,) = [x for x in cons if x["consumer_tag"] == name]
        assert {"consumer_tag", "exclusive", "ack_required", "prefetch_count", "arguments",
                "queue", "channel_details"} <= set(x)
        assert x["queue"] == {"name": qn, "vhost": "/"}
        assert api.call("DELETE", cpath, headers={"X-Reason": "bye from the test"}
                        )[0] == 204
        with pytest.raises(pika.exceptions.ConnectionClosed) as e:
            for _ in range(100):
                conn.process_data_events(0.1)
        assert e.value.reply_code == 320
        assert e.value.reply_text == "CONNECTION_FORCED - bye from the test"
    finally:
        if conn.is_open:
            conn.close()


# ---------------------------------------------------------------------- definitions

def test_definitions_round_trip(api, broker):
    name = broker.name("defq")
    api.call("PUT", f"/api/queues/%2F/{name}", {"durable": True,
                                               "arguments": {"x-message-ttl": 1000}})
    try:
        status, defs, _ = api.get("/api/definitions/%2F")
        assert status == 200
        (qd,) = [d for d in defs["queues"] if d["name"] == name]
        assert {"name", "durable", "auto_delete", "arguments"} <= set(qd)
        assert qd["arguments"] == {"x-message-ttl": 1000}
        api.call("DELETE", f"/api/queues/%2F/{name}")
        body = {"queues": [qd], "exchanges": [], "bindings": []}
        assert api.call("POST", "/api/definitions/%2F", body)[0] in (200, 204)
        assert api.get(f"/api/queues/%2F/{name}")[1]["arguments"] == {"x-message-ttl": 1000}
        full = api.get("/api/definitions")[1]
        assert {"users", "vhosts", "permissions", "queues", "exchanges", "bindings"} <= \
            set(full)
    finally:
        api.call("DELETE", f"/api/queues/%2F/{name}")


def test_queue_counts_follow_the_queue(api, broker):
    """Depths and consumers as a client sees them (RabbitMQ's lag: polled)."""
    name = broker.name("mgmt-depth")
    path = f"/api/queues/%2F/{name}"
    api.call("PUT", path, {"durable": False})
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        ch = conn.channel()
        for i in range(3):
            ch.basic_publish("", name, f"m{i}".encode())
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(name, lambda *a: None)
        conn.process_data_events(0.3)
        want = {"messages": 3, "messages_ready": 2, "messages_unacknowledged": 1,
                "consumers": 1}
        # (RabbitMQ adds message_stats with its next stats emission: polled too)
        info = api.until(path, lambda d: all(d.get(k) == v for k, v in want.items()) and
                         "message_stats" in d)
        assert {"message_stats", "state", "node", "type"} <= set(info)
        assert info["type"] == "classic" and info["state"] == "running"
    finally:
        conn.close()
        api.call("DELETE", path)


def test_a_full_import_creates_its_vhosts(api, broker):
    vhost = broker.name("defs-vh")
    defs = {"vhosts": [{"name": vhost}],
            "permissions": [{"user": "guest", "vhost": vhost, "configure": ".*",
                             "write": ".*", "read": ".*"}],
            "queues": [{"name": "imported", "vhost": vhost, "durable": True,
                        "auto_delete": False, "arguments": {}}],
            "exchanges": [], "bindings": []}
    try:
        assert api.call("POST", "/api/definitions", defs)[0] in (200, 204)
        assert api.get(f"/api/queues/{vhost}/imported")[1]["durable"] is True
        exported = api.get(f"/api/definitions/{q(vhost)}")[1]
        assert [x["name"] for x in exported["queues"]] == ["imported"]
    finally:
        api.call("DELETE", f"/api/vhosts/{q(vhost)}")
    assert api.get(f"/api/vhosts/{q(vhost)}")[0] == 404


def test_health_checks(api, broker):
    port = broker.port
    assert api.get(f"/api/health/checks/port-listener/{port}")[:2] == (
        200, {"status": "ok", "port": port})
    status, doc, _ = api.get("/api/health/checks/port-listener/1")
    assert status == 503 and {k: doc[k] for k in ("status", "reason", "missing")} == {
        "status": "failed", "reason": "No active listener", "missing": 1}
    assert port in doc["ports"]
    assert api.get("/api/health/checks/port-listener/abc")[:2] == (
        400, {"error": "bad_request", "reason": "Invalid port"})
    for name in ("amqp", "amqp091"):
        assert api.get(f"/api/health/checks/protocol-listener/{name}")[:2] == (
            200, {"status": "ok", "protocol": "amqp"})
    status, doc, _ = api.get("/api/health/checks/protocol-listener/zzz")
    assert status == 503 and doc["missing"] == "zzz" and {"amqp", "http"} <= \
        set(doc["protocols"])
    for check in ("virtual-hosts", "local-alarms"):
        assert api.get(f"/api/health/checks/{check}")[:2] == (200, {"status": "ok"})
    for check in ("node-is-quorum-critical", "node-is-mirror-sync-critical"):
        assert api.get(f"/api/health/checks/{check}")[:2] == (
            200, {"status": "ok", "reason": "single node cluster"})


def test_a_user_made_with_a_password_hash_logs_in_over_amqp(api, broker):
    """RabbitMQ's salted SHA-256 hash, made here, is what both brokers check."""
    import hashlib
    import os
    salt = os.urandom(4)
    digest = base64.b64encode(salt + hashlib.sha256(salt + b"hashed-pw").digest()).decode()
    user = broker.name("hash-u")
    assert api.call("PUT", f"/api/users/{user}", {
        "password_hash": digest, "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": ["management"]})[0] == 201
    try:
        assert api.get(f"/api/users/{user}")[1]["password_hash"] == digest
        assert api.call("PUT", f"/api/permissions/%2F/{user}",
                        {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
        u = urllib.parse.urlparse(broker.url)
        params = pika.ConnectionParameters(u.hostname, u.port, "/",
                                           pika.PlainCredentials(user, "hashed-pw"))
        conn = pika.BlockingConnection(params)
        conn.close()
        assert api.as_user(user, "hashed-pw").get("/api/whoami")[1]["name"] == user
        status, doc, _ = api.call("PUT", f"/api/users/{user}", {
            "password_hash": digest, "hashing_algorithm": "rabbit_password_hashing_md5",
            "tags": ""})
        assert status in (201, 204, 400)   # RabbitMQ takes md5; we refuse it (below)
        if broker.kind == "amqpbroker":
            assert status == 400 and doc["error"] == "bad_request"
    finally:
        api.call("DELETE", f"/api/users/{user}")


def test_the_default_exchange_by_its_api_name(api):
    info = api.get("/api/exchanges/%2F/amq.default")[1]
    assert {k: info[k] for k in ("name", "vhost", "type", "durable", "auto_delete",
                                 "internal")} == {
        "name": "", "vhost": "/", "type": "direct", "durable": True, "auto_delete": False,
        "internal": False}
    assert all("vhost" in x for x in api.get("/api/queues?page=1&page_size=5")[1]["items"])


def test_exchange_to_exchange_bindings(api, broker):
    src, dst = broker.name("e2e-src"), broker.name("e2e-dst")
    for name in (src, dst):
        api.call("PUT", f"/api/exchanges/%2F/{name}", {"type": "direct", "durable": False})
    try:
        status, _, hdrs = api.call("POST", f"/api/bindings/%2F/e/{src}/e/{dst}",
                                   {"routing_key": "r k", "arguments": {}})
        assert (status, hdrs["location"]) == (201, f"{dst}/r%2Bk")
        (b,) = api.get(f"/api/bindings/%2F/e/{src}/e/{dst}")[1]
        assert (b["destination_type"], b["routing_key"], b["properties_key"]) == (
            "exchange", "r k", "r+k")
        assert [x["source"] for x in api.get(f"/api/exchanges/%2F/{dst}/bindings/destination"
                                             )[1]] == [src]
        assert api.call("DELETE", f"/api/bindings/%2F/e/{src}/e/{dst}/r%2Bk")[0] == 204
        assert api.get(f"/api/bindings/%2F/e/{src}/e/{dst}")[1] == []
        # RabbitMQ 3.10 crashes on a destination kind other than q and e (500)
        assert api.get(f"/api/bindings/%2F/e/{src}/x/{dst}")[0] == (
            500 if broker.kind == "rabbitmq" else 404)
    finally:
        for name in (src, dst):
            api.call("DELETE", f"/api/exchanges/%2F/{name}")
