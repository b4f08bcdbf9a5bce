"""The Prometheus endpoint's app (its own listener, ``prometheus.port``, as RabbitMQ's
15692), no login as rabbitmq_prometheus: ``GET /metrics`` (aggregated,
``prometheus.render``), ``/metrics/per-object`` and ``/metrics/detailed?family=...&vhost=...``
(``prometheus_objects``)."""
from __future__ import annotations

import urllib.parse

from .. import prometheus, prometheus_objects
from .server import Request, Response, text_response


def prometheus_app(broker):
    def app(req: Request) -> Response:
        path, _, qs = req.target.partition("?")
        path = path.rstrip("/") or "/"
        if path not in ("/metrics", "/metrics/per-object", "/metrics/detailed"):
            return text_response(404, "Not Found\n")
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"", [("allow", "GET, HEAD")])
        if path == "/metrics":
            body, content_type = prometheus.render(broker)
        elif path == "/metrics/per-object":
            body, content_type = prometheus_objects.render_per_object(broker)
        else:
            query = urllib.parse.parse_qs(qs)
            body, content_type = prometheus_objects.render_detailed(
                broker, query.get("family", []), query.get("vhost", []))
        return Response(200, body if req.method == "GET" else b"", content_type=content_type)
    return app
