"""The Prometheus endpoint's app (its own listener, ``prometheus.port``, as RabbitMQ's
15692): ``GET /metrics`` is the aggregated page (``prometheus.render``); no login, as
rabbitmq_prometheus.  ``/metrics/per-object`` and ``/metrics/detailed`` are not served
yet (404)."""
from __future__ import annotations

from .. import prometheus
from .server import Request, Response, text_response


def prometheus_app(broker):
    def app(req: Request) -> Response:
        path = req.target.split("?", 1)[0].rstrip("/") or "/"
        if path != "/metrics":
            return text_response(404, "Not Found\n")
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"", [("allow", "GET, HEAD")])
        body, content_type = prometheus.render(broker)
        return Response(200, body if req.method == "GET" else b"", content_type=content_type)
    return app
