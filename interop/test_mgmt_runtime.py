"""The management API's runtime parameters against both brokers: policies and operator
policies, topic permissions, vhost and user limits (status codes, bodies, shapes), and a
policy set over HTTP applying to a queue at once."""
from __future__ import annotations

import uuid

import pika
import pytest

from test_mgmt_api import API, q

pytestmark = pytest.mark.timeout(120)
S = uuid.uuid4().hex[:8]


@pytest.fixture
def api(broker):
    return API(broker)


def test_policy_lifecycle_and_validation(api, broker):
    name, path = f"pol-{S}", f"/api/policies/%2F/pol-{S}"
    try:
        st, doc, _ = api.call("PUT", path, {"pattern": f"^pq-{S}",
                                            "definition": {"message-ttl": -1}})
        assert (st, doc) == (400, {"error": "bad_request", "reason":
                                   "Validation failed\n\n-1 is not a valid message TTL\n"})
        st, doc, _ = api.call("PUT", path, {"pattern": f"^pq-{S}", "definition": {"bogus": 1}})
        assert (st, doc["reason"]) == (400, "Validation failed\n\n[{&lt;&lt;\"bogus\"&gt;&gt;,1}] "
                                            "are not recognised policy settings\n")
        st, doc, _ = api.call("PUT", path, {"definition": {"max-length": 1}})
        assert (st, doc["reason"]) == (400, "[{key_missing,pattern}]")
        assert api.call("PUT", path, {"pattern": f"^pq-{S}",
                                      "definition": {"max-length": 2}})[0] == 201
        assert api.call("PUT", path, {"pattern": f"^pq-{S}", "definition": {"max-length": 2},
                                      "priority": 3, "apply-to": "queues"})[0] == 204
        want = {"vhost": "/", "name": name, "pattern": f"^pq-{S}", "apply-to": "queues",
                "definition": {"max-length": 2}, "priority": 3}
        assert api.get(path)[1] == want
        assert want in api.get("/api/policies/%2F")[1] and want in api.get("/api/policies")[1]
        # it applies to a queue declared now: the third message drops the first
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        ch.queue_declare(f"pq-{S}")
        for i in range(3):
            ch.basic_publish("", f"pq-{S}", b"%d" % i)
        # (RabbitMQ's queue info names the policy with its next stats emission: polled)
        info = api.until(f"/api/queues/%2F/{q('pq-' + S)}",
                         lambda d: d.get("messages") == 2 and d.get("policy") == name)
        assert info["policy"] == name
        ch.queue_delete(f"pq-{S}")
        conn.close()
    finally:
        api.call("DELETE", path)
    assert api.call("DELETE", path)[0] == 404
    assert api.get(path)[0] == 404


def test_operator_policies(api):
    path = f"/api/operator-policies/%2F/op-{S}"
    try:
        assert api.call("PUT", path, {"pattern": f"^oq-{S}", "definition":
                                      {"max-length": 10}, "apply-to": "queues"})[0] == 201
        assert api.get(path)[1]["definition"] == {"max-length": 10}
        assert any(p["name"] == f"op-{S}" for p in api.get("/api/operator-policies")[1])
    finally:
        assert api.call("DELETE", path)[0] == 204


def test_topic_permissions(api):
    path = "/api/topic-permissions/%2F/guest"
    try:
        assert api.call("PUT", path, {"exchange": "amq.topic", "write": f"^{S}",
                                      "read": ".*"})[0] == 201
        want = {"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": f"^{S}",
                "read": ".*"}
        assert api.get(path)[1] == [want]
        assert want in api.get("/api/topic-permissions")[1]
    finally:
        assert api.call("DELETE", path)[0] == 204
    assert api.get(path)[0] == 404


def test_vhost_and_user_limits(api):
    try:
        assert api.call("PUT", "/api/vhost-limits/%2F/max-queues", {"value": 5000})[0] == 204
        assert api.get("/api/vhost-limits/%2F")[1] == [{"vhost": "/",
                                                        "value": {"max-queues": 5000}}]
        st, doc, _ = api.call("PUT", "/api/vhost-limits/%2F/max-queues", {"value": "x"})
        assert (st, doc["reason"]) == (400, "Validation failed\n\nmax-queues should be a "
                                            "number, actually was <<\"x\">>\n")
        st, doc, _ = api.call("PUT", "/api/vhost-limits/%2F/bogus", {"value": 5})
        assert (st, doc["reason"]) == (400, "Validation failed\n\nUnrecognised terms "
                                            "[{<<\"bogus\">>,5}] in limits\n")
        assert api.call("PUT", "/api/user-limits/guest/max-channels", {"value": 500})[0] == 204
        assert api.get("/api/user-limits/guest")[1] == [{"user": "guest",
                                                         "value": {"max-channels": 500}}]
    finally:
        assert api.call("DELETE", "/api/vhost-limits/%2F/max-queues")[0] == 204
        assert api.call("DELETE", "/api/user-limits/guest/max-channels")[0] == 204
    assert api.get("/api/vhost-limits/%2F")[1] == []


def test_parameters_show_the_vhost_limits(api):
    try:
        assert api.call("PUT", "/api/vhost-limits/%2F/max-queues", {"value": 4000})[0] == 204
        want = {"value": {"max-queues": 4000}, "vhost": "/", "component": "vhost-limits",
                "name": "limits"}
        assert want in api.get("/api/parameters")[1]
        assert api.get("/api/parameters/vhost-limits/%2F")[1] == [want]
        assert api.get("/api/parameters/federation-upstream")[1] == []
        st, doc, _ = api.call("PUT", "/api/parameters/nothing/%2F/x", {"value": {"a": 1}})
        assert (st, doc["reason"]) == (400, "Validation failed\n\ncomponent nothing not found\n")
        names = [p["name"] for p in api.get("/api/global-parameters")[1]]
        assert "internal_cluster_id" in names
    finally:
        api.call("DELETE", "/api/vhost-limits/%2F/max-queues")
